"""Grammar-based sentence generator: English with German translations; German, Spanish, French.

The text of the synthetic speech corpus (`scripts/make_corpus.py`). Every sentence comes
from a small template grammar over a hand-written lexicon, so that a held-out sentence
is a new combination of words rather than one seen in training:

- `en_de_pair(rng)`: an English sentence and its German translation. Templates are
  subject-verb-object sentences with a fixed case per slot (subject nominative, object
  accusative, places and times as fixed phrases), predicates, locations, clock times,
  prices, ages, weather, "there is/are" and a few questions; present or past tense
  (German Perfekt with "haben", with "sein" for "abfahren"/"reisen"; Präteritum for
  "haben", "mögen", "sein").
  German articles and adjective endings agree with the noun's gender, number and case
  (weak endings after der/dies-, mixed after ein/mein/..., strong without determiner).
- `spanish_sentence(rng)`, `french_sentence(rng)`: monolingual sentences with
  gender/number agreement of articles and (post-nominal) adjectives.
- `make_splits(counts, seed)`: train/dev/test sentences per kind ("asr_en", "asr_de",
  "asr_es", "asr_fr", "s2tt_en_de"), deterministic from the seed, with no sentence (after
  `normalize`) in two places: English ASR, German ASR and the S2TT pairs all draw from
  one stream of English-German pairs that are unique on both sides.

Numbers are written as words in every language, so the transcript is what is spoken.
All randomness is a `random.Random` seeded from a string, stable across Python versions.
"""

from __future__ import annotations

import dataclasses
import random
import re
import unicodedata
from typing import Callable, Iterable, Mapping, Sequence

LANGS = ("en", "de", "es", "fr")
# What a corpus holds: ASR in four languages and English->German speech translation.
KINDS = ("asr_en", "asr_de", "asr_es", "asr_fr", "s2tt_en_de")
SPLITS = ("train", "dev", "test")
# Drawing order: test first, so a split's sentences do not depend on the sizes of the
# splits drawn after it; English ASR last within a split, so the (size-limited) English
# training set can grow or shrink without changing any other sentence.
_DRAW_SPLITS = ("test", "dev", "train")
_DRAW_KINDS = ("asr_es", "asr_fr", "asr_de", "s2tt_en_de", "asr_en")
MIN_WORDS = 4
MAX_WORDS = 14


@dataclasses.dataclass(frozen=True)
class Sentence:
  """One corpus sentence.

  Attributes:
    text: the sentence in `lang` (the transcript of its speech).
    lang: "en", "de", "es" or "fr".
    translation: for "s2tt_en_de", the German translation; None otherwise.
  """

  text: str
  lang: str
  translation: str | None = None


# ---------------------------------------------------------------------------------------
# Numbers as words.

_EN_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
            "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_DE_ONES = ("null eins zwei drei vier fünf sechs sieben acht neun zehn elf zwölf dreizehn "
            "vierzehn fünfzehn sechzehn siebzehn achtzehn neunzehn").split()
_DE_TENS = "_ _ zwanzig dreißig vierzig fünfzig sechzig siebzig achtzig neunzig".split()
_ES_ONES = ("cero uno dos tres cuatro cinco seis siete ocho nueve diez once doce trece "
            "catorce quince dieciséis diecisiete dieciocho diecinueve veinte veintiuno "
            "veintidós veintitrés veinticuatro veinticinco veintiséis veintisiete "
            "veintiocho veintinueve").split()
_ES_TENS = "_ _ veinte treinta cuarenta cincuenta sesenta setenta ochenta noventa".split()
_ES_HUNDREDS = ("_ cien doscientos trescientos cuatrocientos quinientos seiscientos "
                "setecientos ochocientos novecientos").split()
_FR_ONES = ("zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize "
            "quatorze quinze seize dix-sept dix-huit dix-neuf").split()
_FR_TENS = "_ _ vingt trente quarante cinquante soixante".split()


def number_en(n: int) -> str:
  """0..999 in English words ("twenty-one", "three hundred", "one hundred and five")."""
  if n < 20:
    return _EN_ONES[n]
  if n < 100:
    tens, ones = divmod(n, 10)
    return _EN_TENS[tens] + (f"-{_EN_ONES[ones]}" if ones else "")
  hundreds, rest = divmod(n, 100)
  return f"{_EN_ONES[hundreds]} hundred" + (f" and {number_en(rest)}" if rest else "")


def number_de(n: int) -> str:
  """0..999 in German words ("einundzwanzig", "dreihundert"); 1 alone is "eins"."""
  if n < 20:
    return _DE_ONES[n]
  if n < 100:
    tens, ones = divmod(n, 10)
    if not ones:
      return _DE_TENS[tens]
    return ("ein" if ones == 1 else _DE_ONES[ones]) + "und" + _DE_TENS[tens]
  hundreds, rest = divmod(n, 100)
  head = "ein" if hundreds == 1 else _DE_ONES[hundreds]
  return f"{head}hundert" + (number_de(rest) if rest else "")


def number_es(n: int) -> str:
  """0..999 in Spanish words, masculine ("veintiuno", "treinta y dos", "ciento cinco")."""
  if n < 30:
    return _ES_ONES[n]
  if n < 100:
    tens, ones = divmod(n, 10)
    return _ES_TENS[tens] + (f" y {_ES_ONES[ones]}" if ones else "")
  hundreds, rest = divmod(n, 100)
  if not rest:
    return _ES_HUNDREDS[hundreds]
  head = "ciento" if hundreds == 1 else _ES_HUNDREDS[hundreds]
  return f"{head} {number_es(rest)}"


def number_fr(n: int) -> str:
  """0..999 in French words, traditional spelling ("vingt et un", "quatre-vingts")."""
  if n < 20:
    return _FR_ONES[n]
  if n < 70:
    tens, ones = divmod(n, 10)
    if ones == 0:
      return _FR_TENS[tens]
    return _FR_TENS[tens] + (" et un" if ones == 1 else f"-{_FR_ONES[ones]}")
  if n < 80:  # soixante-dix .. soixante-dix-neuf, soixante et onze
    return "soixante et onze" if n == 71 else f"soixante-{_FR_ONES[n - 60]}"
  if n < 100:  # quatre-vingts, quatre-vingt-un, quatre-vingt-dix, quatre-vingt-onze
    return "quatre-vingts" if n == 80 else f"quatre-vingt-{_FR_ONES[n - 80]}"
  hundreds, rest = divmod(n, 100)
  head = "cent" if hundreds == 1 else f"{_FR_ONES[hundreds]} cent"
  if not rest:
    return head + ("s" if hundreds > 1 else "")
  return f"{head} {number_fr(rest)}"


# ---------------------------------------------------------------------------------------
# The English-German lexicon.


@dataclasses.dataclass(frozen=True)
class Noun:
  """An English noun and its German translation.

  Attributes:
    en, en_pl: singular and plural.
    de, de_pl: German singular and plural (nominative).
    gender: German gender, "m", "f" or "n".
    cats: semantic categories (which verbs and adjectives go with it).
    de_acc: the accusative singular when it differs (weak masculines: "Bären").
  """

  en: str
  en_pl: str
  de: str
  de_pl: str
  gender: str
  cats: frozenset[str]
  de_acc: str | None = None


def _nouns(cats: str, rows: str) -> list[Noun]:
  """Parses lines "english[/plural] = Deutsch/Plural g [acc=Form]" into Nouns."""
  out = []
  for row in rows.strip().splitlines():
    en_part, de_part = (s.strip() for s in row.split("=", 1))
    en, _, en_pl = en_part.partition("/")
    de_words = de_part.split()
    acc = None
    if de_words[-1].startswith("acc="):
      acc = de_words.pop()[4:]
    gender = de_words.pop()
    de, de_pl = " ".join(de_words).split("/")
    assert gender in ("m", "f", "n"), row
    out.append(Noun(en.strip(), (en_pl or en.strip() + "s").strip(), de.strip(), de_pl.strip(),
                    gender, frozenset(cats.split()), acc))
  return out


PEOPLE = _nouns("person", """
teacher = Lehrer/Lehrer m
doctor = Arzt/Ärzte m
farmer = Bauer/Bauern m
baker = Bäcker/Bäcker m
student = Student/Studenten m
neighbor = Nachbar/Nachbarn m
child/children = Kind/Kinder n
girl = Mädchen/Mädchen n
boy = Junge/Jungen m
woman/women = Frau/Frauen f
man/men = Mann/Männer m
mother = Mutter/Mütter f
father = Vater/Väter m
sister = Schwester/Schwestern f
brother = Bruder/Brüder m
grandmother = Großmutter/Großmütter f
grandfather = Großvater/Großväter m
aunt = Tante/Tanten f
uncle = Onkel/Onkel m
cook = Koch/Köche m
driver = Fahrer/Fahrer m
painter = Maler/Maler m
singer = Sänger/Sänger m
waiter = Kellner/Kellner m
nurse = Krankenschwester/Krankenschwestern f
pilot = Pilot/Piloten m
soldier = Soldat/Soldaten m
king = König/Könige m
queen = Königin/Königinnen f
friend = Freund/Freunde m
tourist = Tourist/Touristen m
guest = Gast/Gäste m
customer = Kunde/Kunden m
worker = Arbeiter/Arbeiter m
engineer = Ingenieur/Ingenieure m
lawyer = Anwalt/Anwälte m
judge = Richter/Richter m
police officer = Polizist/Polizisten m
musician = Musiker/Musiker m
writer = Schriftsteller/Schriftsteller m
scientist = Wissenschaftler/Wissenschaftler m
dentist = Zahnarzt/Zahnärzte m
pupil = Schüler/Schüler m
boss/bosses = Chef/Chefs m
colleague = Kollege/Kollegen m
gardener = Gärtner/Gärtner m
hunter = Jäger/Jäger m
fisherman/fishermen = Fischer/Fischer m
butcher = Metzger/Metzger m
actor = Schauspieler/Schauspieler m
actress/actresses = Schauspielerin/Schauspielerinnen f
baby/babies = Baby/Babys n
mail carrier = Briefträger/Briefträger m
mayor = Bürgermeister/Bürgermeister m
professor = Professor/Professoren m
secretary/secretaries = Sekretärin/Sekretärinnen f
sailor = Seemann/Seeleute m
princess/princesses = Prinzessin/Prinzessinnen f
prince = Prinz/Prinzen m
daughter = Tochter/Töchter f
son = Sohn/Söhne m
family/families = Familie/Familien f
team = Mannschaft/Mannschaften f
""")

THINGS = (
    _nouns("food fruit", """
apple = Apfel/Äpfel m
banana = Banane/Bananen f
pear = Birne/Birnen f
lemon = Zitrone/Zitronen f
tomato/tomatoes = Tomate/Tomaten f
plum = Pflaume/Pflaumen f
peach/peaches = Pfirsich/Pfirsiche m
melon = Melone/Melonen f
""") + _nouns("food cookable", """
potato/potatoes = Kartoffel/Kartoffeln f
carrot = Karotte/Karotten f
egg = Ei/Eier n
sausage = Wurst/Würste f
soup = Suppe/Suppen f
onion = Zwiebel/Zwiebeln f
""") + _nouns("food baked", """
cake = Kuchen/Kuchen m
cookie = Keks/Kekse m
loaf/loaves = Brot/Brote n
pizza = Pizza/Pizzen f
bread roll = Brötchen/Brötchen n
pie = Torte/Torten f
""") + _nouns("food", """
sandwich/sandwiches = Sandwich/Sandwiches n
salad = Salat/Salate m
cucumber = Gurke/Gurken f
""") + _nouns("thing container", """
cup = Tasse/Tassen f
glass/glasses = Glas/Gläser n
bottle = Flasche/Flaschen f
box/boxes = Kiste/Kisten f
bag = Tasche/Taschen f
basket = Korb/Körbe m
bucket = Eimer/Eimer m
bowl = Schüssel/Schüsseln f
pot = Topf/Töpfe m
suitcase = Koffer/Koffer m
backpack = Rucksack/Rucksäcke m
""") + _nouns("thing", """
key = Schlüssel/Schlüssel m
chair = Stuhl/Stühle m
table = Tisch/Tische m
lamp = Lampe/Lampen f
plate = Teller/Teller m
umbrella = Regenschirm/Regenschirme m
clock = Uhr/Uhren f
knife/knives = Messer/Messer n
fork = Gabel/Gabeln f
spoon = Löffel/Löffel m
pen = Stift/Stifte m
pencil = Bleistift/Bleistifte m
phone = Telefon/Telefone n
computer = Computer/Computer m
camera = Kamera/Kameras f
radio = Radio/Radios n
television = Fernseher/Fernseher m
mirror = Spiegel/Spiegel m
picture = Bild/Bilder n
ball = Ball/Bälle m
candle = Kerze/Kerzen f
hammer = Hammer/Hämmer m
ladder = Leiter/Leitern f
rope = Seil/Seile n
towel = Handtuch/Handtücher n
pillow = Kissen/Kissen n
blanket = Decke/Decken f
bed = Bett/Betten n
sofa = Sofa/Sofas n
cupboard = Schrank/Schränke m
wallet = Geldbörse/Geldbörsen f
ring = Ring/Ringe m
guitar = Gitarre/Gitarren f
piano = Klavier/Klaviere n
violin = Geige/Geigen f
drum = Trommel/Trommeln f
flower = Blume/Blumen f
stone = Stein/Steine m
map = Landkarte/Landkarten f
ticket = Fahrkarte/Fahrkarten f
envelope = Umschlag/Umschläge m
stamp = Briefmarke/Briefmarken f
kettle = Wasserkocher/Wasserkocher m
pan = Pfanne/Pfannen f
brush/brushes = Bürste/Bürsten f
comb = Kamm/Kämme m
present = Geschenk/Geschenke n
tent = Zelt/Zelte n
helmet = Helm/Helme m
lamp shade = Lampenschirm/Lampenschirme m
sponge = Schwamm/Schwämme m
blackboard = Tafel/Tafeln f
""") + _nouns("clothing", """
coat = Mantel/Mäntel m
jacket = Jacke/Jacken f
hat = Hut/Hüte m
cap = Mütze/Mützen f
shirt = Hemd/Hemden n
dress/dresses = Kleid/Kleider n
skirt = Rock/Röcke m
sweater = Pullover/Pullover m
scarf/scarves = Schal/Schals m
shoe = Schuh/Schuhe m
boot = Stiefel/Stiefel m
sock = Socke/Socken f
glove = Handschuh/Handschuhe m
belt = Gürtel/Gürtel m
tie = Krawatte/Krawatten f
""") + _nouns("readable writable", """
letter = Brief/Briefe m
poem = Gedicht/Gedichte n
story/stories = Geschichte/Geschichten f
report = Bericht/Berichte m
note = Notiz/Notizen f
postcard = Postkarte/Postkarten f
recipe = Rezept/Rezepte n
""") + _nouns("readable", """
book = Buch/Bücher n
newspaper = Zeitung/Zeitungen f
magazine = Zeitschrift/Zeitschriften f
menu = Speisekarte/Speisekarten f
novel = Roman/Romane m
dictionary/dictionaries = Wörterbuch/Wörterbücher n
""") + _nouns("vehicle drivable", """
car = Auto/Autos n
bus/buses = Bus/Busse m
truck = Lastwagen/Lastwagen m
tractor = Traktor/Traktoren m
taxi = Taxi/Taxis n
""") + _nouns("vehicle", """
bicycle = Fahrrad/Fahrräder n
motorbike = Motorrad/Motorräder n
boat = Boot/Boote n
ship = Schiff/Schiffe n
train = Zug/Züge m
plane = Flugzeug/Flugzeuge n
""") + _nouns("animal", """
dog = Hund/Hunde m
cat = Katze/Katzen f
horse = Pferd/Pferde n
cow = Kuh/Kühe f
pig = Schwein/Schweine n
sheep/sheep = Schaf/Schafe n
goat = Ziege/Ziegen f
chicken = Huhn/Hühner n
duck = Ente/Enten f
goose/geese = Gans/Gänse f
rabbit = Kaninchen/Kaninchen n
mouse/mice = Maus/Mäuse f
bird = Vogel/Vögel m
fish/fish = Fisch/Fische m
fox/foxes = Fuchs/Füchse m
wolf/wolves = Wolf/Wölfe m
bear = Bär/Bären m acc=Bären
lion = Löwe/Löwen m acc=Löwen
elephant = Elefant/Elefanten m acc=Elefanten
monkey = Affe/Affen m acc=Affen
tiger = Tiger/Tiger m
frog = Frosch/Frösche m
owl = Eule/Eulen f
deer/deer = Reh/Rehe n
squirrel = Eichhörnchen/Eichhörnchen n
snake = Schlange/Schlangen f
butterfly/butterflies = Schmetterling/Schmetterlinge m
bee = Biene/Bienen f
donkey = Esel/Esel m
camel = Kamel/Kamele n
""") + _nouns("building", """
house = Haus/Häuser n
church/churches = Kirche/Kirchen f
castle = Schloss/Schlösser n
bridge = Brücke/Brücken f
tower = Turm/Türme m
school = Schule/Schulen f
museum = Museum/Museen n
library/libraries = Bibliothek/Bibliotheken f
hospital = Krankenhaus/Krankenhäuser n
hotel = Hotel/Hotels n
farm = Bauernhof/Bauernhöfe m
restaurant = Restaurant/Restaurants n
shop = Laden/Läden m
cinema = Kino/Kinos n
theater = Theater/Theater n
factory/factories = Fabrik/Fabriken f
stadium = Stadion/Stadien n
""")
)

# Drinks: a container of a liquid ("a big glass of milk" = "ein großes Glas Milch").
_CONTAINERS = {  # en, en_pl, de, de_pl, gender, liquids
    "glass": ("glasses", "Glas", "Gläser", "n", "water milk orange_juice apple_juice lemonade "
              "wine beer"),
    "cup": ("cups", "Tasse", "Tassen", "f", "tea coffee milk"),
    "bottle": ("bottles", "Flasche", "Flaschen", "f", "water milk orange_juice apple_juice "
               "lemonade wine beer"),
    "jug": ("jugs", "Krug", "Krüge", "m", "water milk lemonade"),
}
_LIQUIDS = {"water": "Wasser", "milk": "Milch", "orange_juice": "Orangensaft",
            "apple_juice": "Apfelsaft", "lemonade": "Limonade", "wine": "Wein",
            "beer": "Bier", "tea": "Tee", "coffee": "Kaffee"}
DRINKS = [
    Noun(f"{c} of {liq.replace('_', ' ')}", f"{pl} of {liq.replace('_', ' ')}",
         f"{de} {_LIQUIDS[liq]}", f"{de_pl} {_LIQUIDS[liq]}", g, frozenset({"drink"}))
    for c, (pl, de, de_pl, g, liqs) in _CONTAINERS.items() for liq in liqs.split()]
NOUNS = PEOPLE + THINGS + DRINKS

# Events with a start time ("The concert begins at eight o'clock.").
EVENTS = _nouns("event", """
concert = Konzert/Konzerte n
meeting = Treffen/Treffen n
movie = Film/Filme m
lesson = Unterrichtsstunde/Unterrichtsstunden f
game = Spiel/Spiele n
party/parties = Party/Partys f
wedding = Hochzeit/Hochzeiten f
lecture = Vorlesung/Vorlesungen f
show = Vorstellung/Vorstellungen f
course = Kurs/Kurse m
market = Markt/Märkte m
festival = Fest/Feste n
breakfast = Frühstück/Frühstücke n
dinner = Abendessen/Abendessen n
lunch/lunches = Mittagessen/Mittagessen n
exam = Prüfung/Prüfungen f
guided tour = Führung/Führungen f
race = Rennen/Rennen n
""")
# Vehicles that leave for a city ("The train to Rome leaves at ..." = "fährt um ... ab").
DEPARTING = [n for n in THINGS if n.en in ("train", "bus", "boat", "ship")] + _nouns(
    "vehicle", "ferry/ferries = Fähre/Fähren f")


@dataclasses.dataclass(frozen=True)
class Adjective:
  """An adjective; `de_stem` is the stem for endings when it differs ("teuer" -> "teur")."""

  en: str
  de: str
  cats: frozenset[str]
  de_stem: str | None = None

  @property
  def stem(self) -> str:
    """What endings attach to: "rot" -> "rot", "müde" -> "müd" (müder, müde, müdes)."""
    if self.de_stem:
      return self.de_stem
    return self.de[:-1] if self.de.endswith("e") else self.de


def _adjectives(cats: str, rows: str) -> list[Adjective]:
  """Parses "english = deutsch[/stem]" pairs (several a line, ';'-separated)."""
  out = []
  for row in rows.replace("\n", ";").split(";"):
    if not row.strip():
      continue
    en, de = (s.strip() for s in row.split("="))
    de, _, stem = de.partition("/")
    out.append(Adjective(en, de, frozenset(cats.split()), stem or None))
  return out


ADJECTIVES = (
    _adjectives("fruit thing clothing vehicle building", """
red = rot; blue = blau; green = grün; yellow = gelb; black = schwarz; white = weiß
""") + _adjectives("thing clothing vehicle building animal", """
brown = braun; gray = grau
""") + _adjectives("thing clothing vehicle", """
golden = golden; silver = silbern; dark = dunkel/dunkl
""") + _adjectives("thing clothing vehicle building readable animal container drink", """
big = groß; small = klein
""") + _adjectives("thing clothing vehicle building readable animal", """
old = alt
""") + _adjectives("thing clothing vehicle building readable container", """
new = neu; expensive = teuer/teur; cheap = billig; beautiful = schön; ugly = hässlich
""") + _adjectives("thing clothing vehicle container", """
heavy = schwer; light = leicht; clean = sauber; dirty = schmutzig; broken = kaputt
""") + _adjectives("container drink", """
full = voll
""") + _adjectives("container", """
empty = leer; round = rund; wooden = hölzern
""") + _adjectives("thing clothing", """
soft = weich; warm = warm; wet = nass; dry = trocken; thin = dünn; thick = dick
""") + _adjectives("clothing readable", """
long = lang; short = kurz
""") + _adjectives("vehicle building thing", """
modern = modern; huge = riesig; tiny = winzig; strange = seltsam; famous = berühmt
""") + _adjectives("vehicle animal", """
fast = schnell; slow = langsam; loud = laut
""") + _adjectives("food", """
fresh = frisch; delicious = lecker; sweet = süß; warm = warm; cold = kalt
""") + _adjectives("fruit", """
ripe = reif; sour = sauer/saur; juicy = saftig
""") + _adjectives("readable", """
interesting = interessant; boring = langweilig; funny = lustig; sad = traurig
""") + _adjectives("person animal", """
young = jung; hungry = hungrig; tired = müde; friendly = freundlich; curious = neugierig
quiet = ruhig; lazy = faul; sick = krank
""") + _adjectives("person", """
old = alt; happy = glücklich; sad = traurig; angry = wütend; rich = reich; poor = arm
clever = klug; brave = mutig; funny = lustig; polite = höflich; proud = stolz
famous = berühmt; nervous = nervös; healthy = gesund; strong = stark; tall = groß
kind = nett; strict = streng; patient = geduldig; busy = beschäftigt; lonely = einsam
""") + _adjectives("animal", """
wild = wild; dangerous = gefährlich; fat = dick; beautiful = schön
""")
)


@dataclasses.dataclass(frozen=True)
class Verb:
  """A transitive verb: English 3sg, plural, past; German 3sg, 3pl, participle.

  German past is the Perfekt with "haben" unless `de_pret` (3sg, 3pl Praeteritum) is
  given, as for "haben" and "moegen" whose Perfekt sounds odd.
  """

  en: str
  en_pl: str
  en_past: str
  de: str
  de_pl: str
  de_part: str
  cats: frozenset[str]
  de_pret: tuple[str, str] | None = None


def _verbs(rows: str) -> list[Verb]:
  """Parses "en3|en_pl|en_past = de3|de_pl|participle : categories [: pret3|pretpl]"."""
  out = []
  for row in rows.strip().splitlines():
    forms, cats, *pret = (s.strip() for s in row.split(":"))
    en, de = (s.strip().split("|") for s in forms.split("="))
    out.append(Verb(*en, *de, frozenset(cats.split()),
                    tuple(pret[0].split("|")) if pret else None))
  return out


_ALL_OBJECTS = "food thing clothing readable vehicle animal building drink"
_SIGHTS = "animal vehicle building"
VERBS = _verbs(f"""
buys|buy|bought = kauft|kaufen|gekauft : food thing clothing readable vehicle drink building
sells|sell|sold = verkauft|verkaufen|verkauft : food thing clothing readable vehicle building
sees|see|saw = sieht|sehen|gesehen : {_ALL_OBJECTS}
finds|find|found = findet|finden|gefunden : thing clothing readable animal
needs|need|needed = braucht|brauchen|gebraucht : food thing clothing readable vehicle drink
carries|carry|carried = trägt|tragen|getragen : thing readable container
wears|wear|wore = trägt|tragen|getragen : clothing
loses|lose|lost = verliert|verlieren|verloren : thing clothing readable
looks for|look for|looked for = sucht|suchen|gesucht : thing clothing readable animal
brings|bring|brought = bringt|bringen|gebracht : food thing readable drink
eats|eat|ate = isst|essen|gegessen : food
drinks|drink|drank = trinkt|trinken|getrunken : drink
cooks|cook|cooked = kocht|kochen|gekocht : cookable
bakes|bake|baked = backt|backen|gebacken : baked
orders|order|ordered = bestellt|bestellen|bestellt : food drink
reads|read|read = liest|lesen|gelesen : readable
writes|write|wrote = schreibt|schreiben|geschrieben : writable
opens|open|opened = öffnet|öffnen|geöffnet : container readable
cleans|clean|cleaned = putzt|putzen|geputzt : thing vehicle
washes|wash|washed = wäscht|waschen|gewaschen : clothing vehicle container
repairs|repair|repaired = repariert|reparieren|repariert : thing vehicle
draws|draw|drew = zeichnet|zeichnen|gezeichnet : animal vehicle building fruit
photographs|photograph|photographed = fotografiert|fotografieren|fotografiert : {_SIGHTS}
feeds|feed|fed = füttert|füttern|gefüttert : animal
likes|like|liked = mag|mögen|gemocht : {_ALL_OBJECTS} : mochte|mochten
has|have|had = hat|haben|gehabt : food thing clothing readable vehicle animal drink : hatte|hatten
forgets|forget|forgot = vergisst|vergessen|vergessen : thing clothing readable
takes|take|took = nimmt|nehmen|genommen : food thing readable drink
shows|show|showed = zeigt|zeigen|gezeigt : thing readable animal clothing
gets|get|got = bekommt|bekommen|bekommen : thing clothing readable drink
hides|hide|hid = versteckt|verstecken|versteckt : thing readable
fills|fill|filled = füllt|füllen|gefüllt : container
empties|empty|emptied = leert|leeren|geleert : container
builds|build|built = baut|bauen|gebaut : building
visits|visit|visited = besucht|besuchen|besucht : building
uses|use|used = benutzt|benutzen|benutzt : thing vehicle
drives|drive|drove = fährt|fahren|gefahren : drivable
paints|paint|painted = streicht|streichen|gestrichen : building
""")

NAMES = """Anna Maria Peter Thomas Michael Paul Lisa Julia Sarah David Daniel Laura Emma
Sophie Max Lukas Jonas Leon Felix Tom Tim Jan Ben Emily Lena Clara Hannah Eva Martin Stefan
Andreas Frank Klaus Monika Sabine Petra Robert Oliver Simon Olga Ivan Carlos Pedro Lucia
Elena Sofia Marco Luca Giulia Pierre Marie Claire Louis Hugo James John Mary Jack Oscar
Henry Alice Grace Lucy Ruth Kevin Nina Rosa Ida Greta Karl Otto Ingrid Helga Erik Sven Lars
Astrid Ali Fatima Leila Omar Kenji Yuki Priya Ahmed Mila Noah Elias Paula Jakob Theo Lotte
Mia Ella Vera Moritz Hanna Bruno Linda Walter Susanne""".split()

CITIES = [tuple(p.split("=")) if "=" in p else (p, p) for p in """London Paris Berlin
Munich=München Hamburg Cologne=Köln Frankfurt Stuttgart Dresden Leipzig Bremen
Hanover=Hannover Nuremberg=Nürnberg Vienna=Wien Zurich=Zürich Geneva=Genf Basel Bern
Rome=Rom Milan=Mailand Venice=Venedig Naples=Neapel Florence=Florenz Madrid Barcelona
Seville=Sevilla Lisbon=Lissabon Porto Amsterdam Brussels=Brüssel Copenhagen=Kopenhagen
Stockholm Oslo Helsinki Warsaw=Warschau Prague=Prag Budapest Athens=Athen Moscow=Moskau
Istanbul Cairo=Kairo Tokyo=Tokio Beijing=Peking Delhi Sydney Toronto Chicago Boston
Dublin Edinburgh Manchester Lyon Marseille Salzburg Innsbruck Graz Bonn Kiel Mainz
Bordeaux Toulouse Valencia Bilbao Krakow=Krakau Riga Tallinn Bergen Antwerp=Antwerpen
Rotterdam Glasgow Liverpool Seattle Denver Montreal Lima Santiago Heidelberg Freiburg
Potsdam Rostock Lucerne=Luzern Verona Turin=Turin Marrakesh=Marrakesch""".split()]

COUNTRIES = [tuple(p.split("=")) if "=" in p else (p, p) for p in """Germany=Deutschland
France=Frankreich Spain=Spanien Italy=Italien England Japan China Canada=Kanada
Brazil=Brasilien Austria=Österreich Poland=Polen Sweden=Schweden Norway=Norwegen
Denmark=Dänemark Finland=Finnland Greece=Griechenland Portugal Russia=Russland
Mexico=Mexiko Australia=Australien India=Indien Egypt=Ägypten Ireland=Irland
Scotland=Schottland Hungary=Ungarn Belgium=Belgien Chile Peru Argentina=Argentinien
Morocco=Marokko Croatia=Kroatien""".split()]

# Fixed place phrases, English and German (prepositions with their dative already made).
PLACES = [tuple(s.strip() for s in p.split("=")) for p in """in the park = im Park
in the garden = im Garten; in the kitchen = in der Küche; at the station = am Bahnhof
at the market = auf dem Markt; in the city = in der Stadt; at home = zu Hause
at school = in der Schule; in the office = im Büro; at the airport = am Flughafen
in the forest = im Wald; on the beach = am Strand; in the village = im Dorf
in the supermarket = im Supermarkt; at the bakery = in der Bäckerei
in the library = in der Bibliothek; in the living room = im Wohnzimmer
in the hotel = im Hotel; on the train = im Zug; on the bus = im Bus
in the museum = im Museum; at the harbor = am Hafen; in the mountains = in den Bergen
on the farm = auf dem Bauernhof; by the river = am Fluss; by the lake = am See
in the shop = im Laden; in the hospital = im Krankenhaus; in the restaurant = im Restaurant
in the cellar = im Keller; in the attic = auf dem Dachboden; in the bathroom = im Badezimmer
in the bedroom = im Schlafzimmer; on the balcony = auf dem Balkon; at the zoo = im Zoo
at the university = an der Universität; in the square = auf dem Platz
in the street = auf der Straße; at the post office = auf der Post
in the church = in der Kirche; at the theater = im Theater; at the cinema = im Kino
in the classroom = im Klassenzimmer; in the car = im Auto""".replace("\n", ";").split(";")]

WEEKDAYS = list(zip("Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split(),
                    "Montag Dienstag Mittwoch Donnerstag Freitag Samstag Sonntag".split()))
MONTHS = list(zip(("January February March April May June July August September October "
                   "November December").split(),
                  ("Januar Februar März April Mai Juni Juli August September Oktober "
                   "November Dezember").split()))
MEANS = [("by train", "mit dem Zug"), ("by bus", "mit dem Bus"), ("by car", "mit dem Auto"),
         ("by bike", "mit dem Fahrrad"), ("by plane", "mit dem Flugzeug"),
         ("by boat", "mit dem Schiff"), ("by taxi", "mit dem Taxi")]
WEATHER = [("cold", "kalt"), ("warm", "warm"), ("hot", "heiß"), ("sunny", "sonnig"),
           ("windy", "windig"), ("rainy", "regnerisch"), ("cloudy", "bewölkt"),
           ("foggy", "neblig"), ("wet", "nass"), ("very cold", "sehr kalt"),
           ("very hot", "sehr heiß"), ("quite warm", "ziemlich warm")]

# ---------------------------------------------------------------------------------------
# German noun phrases: the article and adjective ending tables.

_CASES = ("nom", "acc")
_DER = {"nom": {"m": "der", "f": "die", "n": "das", "pl": "die"},
        "acc": {"m": "den", "f": "die", "n": "das", "pl": "die"}}
# Endings of dies- (and every der-word) and of ein/mein/sein/ihr/unser.
_DER_WORD_END = {"nom": {"m": "er", "f": "e", "n": "es", "pl": "e"},
                 "acc": {"m": "en", "f": "e", "n": "es", "pl": "e"}}
_EIN_WORD_END = {"nom": {"m": "", "f": "e", "n": "", "pl": "e"},
                 "acc": {"m": "en", "f": "e", "n": "", "pl": "e"}}
# Adjective endings: weak after der-words, mixed after ein-words, strong with no determiner
# (only plurals here: "drei rote Äpfel", "rote Äpfel").
_WEAK = {"nom": {"m": "e", "f": "e", "n": "e", "pl": "en"},
         "acc": {"m": "en", "f": "e", "n": "e", "pl": "en"}}
_MIXED = {"nom": {"m": "er", "f": "e", "n": "es", "pl": "en"},
          "acc": {"m": "en", "f": "e", "n": "es", "pl": "en"}}
_STRONG_PL = "e"
# Possessives: English -> German stem (an ein-word).
POSSESSIVES = {"my": "mein", "his": "sein", "her": "ihr", "our": "unser", "their": "ihr"}
DETERMINERS = ("the", "a", "this", "poss", "number")


@dataclasses.dataclass(frozen=True)
class NounPhrase:
  """A determiner, an optional adjective and a noun, in singular or plural.

  Attributes:
    noun: the head noun.
    det: "the", "a" (plural: none), "this" (these), "number" (plural only), or a
      possessive key of POSSESSIVES ("my", "his", ...).
    plural: singular or plural.
    adj: an optional adjective.
    count: the number for det == "number" (2..99).
  """

  noun: Noun
  det: str
  plural: bool = False
  adj: Adjective | None = None
  count: int = 0

  def en(self) -> str:
    """English: "the red apple", "an old car", "my three new books", "big dogs"."""
    noun = self.noun.en_pl if self.plural else self.noun.en
    words = ([self.adj.en] if self.adj else []) + [noun]
    if self.det == "the":
      head = "the"
    elif self.det == "a":
      head = "" if self.plural else indefinite_article_en(words[0])
    elif self.det == "this":
      head = "these" if self.plural else "this"
    elif self.det == "number":
      head = number_en(self.count)
    else:
      head = self.det
    return " ".join([head] + words if head else words)

  def de(self, case: str) -> str:
    """German in `case` ("nom" or "acc"): "den roten Apfel", "ein altes Auto", ..."""
    if case not in _CASES:
      raise ValueError(f"case must be one of {_CASES}, got {case!r}")
    key = "pl" if self.plural else self.noun.gender
    if self.plural:
      noun = self.noun.de_pl
    else:
      noun = self.noun.de_acc if case == "acc" and self.noun.de_acc else self.noun.de
    if self.det == "the":
      head, endings = _DER[case][key], _WEAK
    elif self.det == "this":
      head, endings = "dies" + _DER_WORD_END[case][key], _WEAK
    elif self.det == "a" and not self.plural:
      head, endings = "ein" + _EIN_WORD_END[case][key], _MIXED
    elif self.det == "a":  # indefinite plural: no determiner
      head, endings = "", None
    elif self.det == "number":
      head, endings = number_de(self.count), None
    else:
      head, endings = POSSESSIVES[self.det] + _EIN_WORD_END[case][key], _MIXED
    words = [head] if head else []
    if self.adj:
      ending = _STRONG_PL if endings is None else endings[case][key]
      words.append(self.adj.stem + ending)
    words.append(noun)
    return " ".join(words)


_AN_EXCEPTIONS = ("uni", "use", "usu", "eu", "one", "once")
_AN_SILENT_H = ("hour", "honest", "honor", "heir")


def indefinite_article_en(word: str) -> str:
  """ "a" or "an" for the English word that follows."""
  w = word.lower()
  if w.startswith(_AN_SILENT_H):
    return "an"
  if w.startswith(_AN_EXCEPTIONS):
    return "a"
  return "an" if w[:1] in "aeiou" else "a"


def _cap(s: str) -> str:
  return s[:1].upper() + s[1:]


def _sentence(words: Iterable[str], end: str = ".") -> str:
  text = " ".join(w for w in words if w)
  return _cap(text) + end


# ---------------------------------------------------------------------------------------
# English-German templates.

_PRESENT_TIMES = ([("every day", "jeden Tag"), ("every morning", "jeden Morgen"),
                   ("every evening", "jeden Abend"), ("every week", "jede Woche"),
                   ("today", "heute"), ("in the morning", "am Morgen"),
                   ("in the evening", "am Abend"), ("at night", "in der Nacht"),
                   ("in summer", "im Sommer"), ("in winter", "im Winter"),
                   ("in spring", "im Frühling"), ("in the fall", "im Herbst"),
                   ("on the weekend", "am Wochenende"), ("often", "oft"),
                   ("sometimes", "manchmal")]
                  + [(f"every {e}", f"jeden {d}") for e, d in WEEKDAYS]
                  + [(f"on {e}s", f"{d.lower()}s") for e, d in WEEKDAYS])
_PAST_TIMES = ([("yesterday", "gestern"), ("last week", "letzte Woche"),
                ("last month", "letzten Monat"), ("last year", "letztes Jahr"),
                ("this morning", "heute Morgen"), ("yesterday evening", "gestern Abend"),
                ("last summer", "letzten Sommer"), ("last winter", "letzten Winter")]
               + [(f"on {e}", f"am {d}") for e, d in WEEKDAYS]
               + [(f"in {e}", f"im {d}") for e, d in MONTHS])


def _clock_time(rng: random.Random) -> tuple[str, str]:
  """("at half past seven", "um halb acht") and the like; hours 1..12."""
  h = rng.randint(1, 12)
  nxt = h % 12 + 1
  kind = rng.choice(("oclock", "oclock", "half", "quarter_past", "quarter_to"))
  if kind == "oclock":
    return f"at {number_en(h)} o'clock", f"um {'ein' if h == 1 else number_de(h)} Uhr"
  if kind == "half":
    return f"at half past {number_en(h)}", f"um halb {number_de(nxt)}"
  if kind == "quarter_past":
    return f"at a quarter past {number_en(h)}", f"um Viertel nach {number_de(h)}"
  return f"at a quarter to {number_en(nxt)}", f"um Viertel vor {number_de(nxt)}"


def _time(rng: random.Random, past: bool) -> tuple[str, str]:
  r = rng.random()
  if r < 0.2:
    return _clock_time(rng)
  if past and r < 0.35:
    n = rng.randint(2, 12)
    unit = rng.choice((("days", "Tagen"), ("weeks", "Wochen"), ("years", "Jahren")))
    return f"{number_en(n)} {unit[0]} ago", f"vor {number_de(n)} {unit[1]}"
  return rng.choice(_PAST_TIMES if past else _PRESENT_TIMES)


def _place(rng: random.Random) -> tuple[str, str]:
  if rng.random() < 0.3:
    en, de = rng.choice(CITIES)
    return f"in {en}", f"in {de}"
  return rng.choice(PLACES)


def _adjective_for(rng: random.Random, noun: Noun, p: float) -> Adjective | None:
  if rng.random() >= p:
    return None
  options = [a for a in ADJECTIVES if a.cats & noun.cats]
  if not options:
    return None
  # Adjectives listed under several categories appear once per entry: dedupe by text.
  options = list({(a.en, a.de): a for a in options}.values())
  return rng.choice(options)


def _noun_phrase(rng: random.Random, nouns: Sequence[Noun], adj_p: float = 0.5,
                 allow_number: bool = True) -> NounPhrase:
  noun = rng.choice(nouns)
  det = rng.choice(("the", "the", "a", "a", "this", "poss", "number") if allow_number
                   else ("the", "the", "a", "a", "this", "poss"))
  plural = det == "number" or rng.random() < 0.3
  count = rng.randint(2, 99) if det == "number" else 0
  if det == "number" and rng.random() < 0.6:
    count = rng.randint(2, 12)
  if det == "poss":
    det = rng.choice(tuple(POSSESSIVES))
  return NounPhrase(noun, det, plural, _adjective_for(rng, noun, adj_p), count)


@dataclasses.dataclass(frozen=True)
class _Subject:
  en: str
  de: str
  plural: bool


def _subject(rng: random.Random, adj_p: float = 0.4) -> _Subject:
  if rng.random() < 0.35:
    name = rng.choice(NAMES)
    return _Subject(name, name, False)
  np_ = _noun_phrase(rng, PEOPLE, adj_p)
  return _Subject(np_.en(), np_.de("nom"), np_.plural)


def _svo(rng: random.Random) -> tuple[str, str]:
  """Subject-verb-object with an optional place and time, present or past."""
  verb = rng.choice(VERBS)
  subj = _subject(rng)
  obj = _noun_phrase(rng, [n for n in THINGS + DRINKS if n.cats & verb.cats])
  past = rng.random() < 0.5
  place = _place(rng) if rng.random() < 0.4 else None
  time = _time(rng, past) if rng.random() < 0.5 else None
  front = time is not None and rng.random() < 0.5
  if past:
    en_verb = verb.en_past
  else:
    en_verb = verb.en_pl if subj.plural else verb.en
  en = [time[0] if front else "", subj.en, en_verb, obj.en(), place[0] if place else "",
        time[0] if time and not front else ""]
  # German: V2; time fronted (inversion) or right after the finite verb; participle last.
  if past and verb.de_pret is None:
    finite, last = ("haben" if subj.plural else "hat"), verb.de_part
  elif past:
    finite, last = verb.de_pret[1 if subj.plural else 0], ""
  else:
    finite, last = (verb.de_pl if subj.plural else verb.de), ""
  mid = [obj.de("acc"), place[1] if place else "", last]
  if front:
    de = [time[1], finite, subj.de] + mid
  else:
    de = [subj.de, finite, time[1] if time else ""] + mid
  return _sentence(en), _sentence(de)


def _predicate(rng: random.Random) -> tuple[str, str]:
  """ "The old car is very expensive." / "Das alte Auto ist sehr teuer." """
  pool = PEOPLE + [n for n in THINGS if n.cats & {"thing", "clothing", "vehicle", "animal",
                                                  "building", "readable", "food"}]
  np_ = _noun_phrase(rng, pool, adj_p=0.3, allow_number=False)
  while np_.det == "a":
    np_ = _noun_phrase(rng, pool, adj_p=0.3, allow_number=False)
  options = [a for a in ADJECTIVES if a.cats & np_.noun.cats and a != np_.adj
             and (np_.adj is None or a.en != np_.adj.en)]
  adj = rng.choice(options)
  past = rng.random() < 0.4
  en_be = ("were" if np_.plural else "was") if past else ("are" if np_.plural else "is")
  de_be = ("waren" if np_.plural else "war") if past else ("sind" if np_.plural else "ist")
  very = rng.choice((("", ""), ("", ""), ("very", "sehr"), ("quite", "ziemlich"),
                     ("too", "zu")))
  return (_sentence([np_.en(), en_be, very[0], adj.en]),
          _sentence([np_.de("nom"), de_be, very[1], adj.de]))


def _location(rng: random.Random) -> tuple[str, str]:
  """ "The red book is in the kitchen." / "Das rote Buch ist in der Küche." """
  np_ = _noun_phrase(rng, [n for n in THINGS if "building" not in n.cats] + DRINKS,
                     allow_number=False)
  while np_.det == "a":
    np_ = _noun_phrase(rng, [n for n in THINGS if "building" not in n.cats] + DRINKS,
                       allow_number=False)
  place = rng.choice(PLACES)
  past = rng.random() < 0.4
  en_be = ("were" if np_.plural else "was") if past else ("are" if np_.plural else "is")
  de_be = ("waren" if np_.plural else "war") if past else ("sind" if np_.plural else "ist")
  if rng.random() < 0.3:
    return (_sentence(["where", en_be, np_.en()], "?"),
            _sentence(["wo", de_be, np_.de("nom")], "?"))
  return _sentence([np_.en(), en_be, place[0]]), _sentence([np_.de("nom"), de_be, place[1]])


def _event(rng: random.Random) -> tuple[str, str]:
  """ "The concert in Vienna begins at eight o'clock." / "... beginnt um acht Uhr." """
  event = NounPhrase(rng.choice(EVENTS), "the")
  city = rng.choice(CITIES) if rng.random() < 0.4 else None
  en_np = event.en() + (f" in {city[0]}" if city else "")
  de_np = event.de("nom") + (f" in {city[1]}" if city else "")
  time = _clock_time(rng)
  day = rng.choice(WEEKDAYS) if rng.random() < 0.3 else None
  if rng.random() < 0.2:
    return (_sentence(["when does", en_np, "begin"], "?"),
            _sentence(["wann beginnt", de_np], "?"))
  past = rng.random() < 0.3
  en = [en_np, "began" if past else "begins", f"on {day[0]}" if day else "", time[0]]
  de = [de_np, "begann" if past else "beginnt", f"am {day[1]}" if day else "", time[1]]
  return _sentence(en), _sentence(de)


def _departure(rng: random.Random) -> tuple[str, str]:
  """ "The train to Rome leaves at half past seven." / "Der Zug nach Rom fährt um halb acht ab."
  """
  vehicle = NounPhrase(rng.choice(DEPARTING), "the", adj=None)
  city = rng.choice(CITIES)
  time = _clock_time(rng)
  en_np, de_np = f"{vehicle.en()} to {city[0]}", f"{vehicle.de('nom')} nach {city[1]}"
  if rng.random() < 0.4:
    return (_sentence([en_np, "left", time[0]]),
            _sentence([de_np, "ist", time[1], "abgefahren"]))
  return _sentence([en_np, "leaves", time[0]]), _sentence([de_np, "fährt", time[1], "ab"])


def _home(rng: random.Random) -> tuple[str, str]:
  """Where someone lives, works, comes from or travels to."""
  subj = _subject(rng, adj_p=0.3)
  kind = rng.choice(("lives", "works", "comes", "travels", "travels"))
  past = rng.random() < 0.4 and kind != "comes"
  city = rng.choice(CITIES)
  if kind == "comes":
    country = rng.choice(COUNTRIES)
    return (_sentence([subj.en, "come" if subj.plural else "comes", "from", country[0]]),
            _sentence([subj.de, "kommen" if subj.plural else "kommt", "aus", country[1]]))
  if kind in ("lives", "works"):
    en_v = {"lives": ("lives", "live", "lived"), "works": ("works", "work", "worked")}[kind]
    de_v = {"lives": ("wohnt", "wohnen", "wohnte", "wohnten"),
            "works": ("arbeitet", "arbeiten", "arbeitete", "arbeiteten")}[kind]
    en = en_v[2] if past else en_v[1 if subj.plural else 0]
    de = de_v[(2 if past else 0) + (1 if subj.plural else 0)]
    return _sentence([subj.en, en, "in", city[0]]), _sentence([subj.de, de, "in", city[1]])
  means = rng.choice(MEANS)
  time = _time(rng, past) if rng.random() < 0.5 else None
  en_v = "traveled" if past else ("travel" if subj.plural else "travels")
  en = [subj.en, en_v, "to", city[0], means[0], time[0] if time else ""]
  if past:
    de = [subj.de, "sind" if subj.plural else "ist", time[1] if time else "", means[1],
          "nach", city[1], "gereist"]
  else:
    de = [subj.de, "reisen" if subj.plural else "reist", time[1] if time else "", means[1],
          "nach", city[1]]
  return _sentence(en), _sentence(de)


def _age(rng: random.Random) -> tuple[str, str]:
  """ "My grandmother is eighty-two years old." / "Meine Großmutter ist ... Jahre alt." """
  if rng.random() < 0.5:
    name = rng.choice(NAMES)
    en_s, de_s = name, name
  else:
    np_ = NounPhrase(rng.choice(PEOPLE), rng.choice(("the", "this", *POSSESSIVES)),
                     adj=None)
    en_s, de_s = np_.en(), np_.de("nom")
  n = rng.randint(2, 99)
  past = rng.random() < 0.3
  return (_sentence([en_s, "was" if past else "is", number_en(n), "years old"]),
          _sentence([de_s, "war" if past else "ist", number_de(n), "Jahre alt"]))


def _price(rng: random.Random) -> tuple[str, str]:
  """ "The red bicycle costs ninety euros." / "Das rote Fahrrad kostet neunzig Euro." """
  pool = [n for n in THINGS if n.cats & {"thing", "clothing", "vehicle", "readable", "food"}]
  np_ = NounPhrase(rng.choice(pool), rng.choice(("the", "this")), False, None)
  np_ = dataclasses.replace(np_, adj=_adjective_for(rng, np_.noun, 0.6))
  n = rng.randint(2, 99) if rng.random() < 0.7 else 100 * rng.randint(1, 9)
  if rng.random() < 0.25:
    return (_sentence(["how much does", np_.en(), "cost"], "?"),
            _sentence(["wie viel kostet", np_.de("nom")], "?"))
  past = rng.random() < 0.3
  return (_sentence([np_.en(), "cost" if past else "costs", number_en(n), "euros"]),
          _sentence([np_.de("nom"), "kostete" if past else "kostet", number_de(n), "Euro"]))


def _weather(rng: random.Random) -> tuple[str, str]:
  """ "It was windy in Hamburg yesterday." / "In Hamburg war es gestern windig." """
  city = rng.choice(CITIES)
  w = rng.choice(WEATHER)
  past = rng.random() < 0.5
  en_t, de_t = rng.choice([("yesterday", "gestern"), ("last week", "letzte Woche"),
                           ("on Sunday", "am Sonntag")] if past else
                          [("today", "heute"), ("in winter", "im Winter"),
                           ("in summer", "im Sommer"), ("this morning", "heute Morgen")])
  return (_sentence(["it", "was" if past else "is", w[0], "in", city[0], en_t]),
          _sentence(["in", city[1], "war" if past else "ist", "es", de_t, w[1]]))


def _there_is(rng: random.Random) -> tuple[str, str]:
  """ "There are three old chairs in the kitchen." / "In der Küche gibt es drei ..." """
  pool = [n for n in THINGS if "building" not in n.cats] + DRINKS
  np_ = _noun_phrase(rng, pool)
  if np_.det not in ("a", "number"):
    np_ = dataclasses.replace(np_, det="a")
  place = rng.choice(PLACES)
  past = rng.random() < 0.4
  en_be = ("were" if np_.plural else "was") if past else ("are" if np_.plural else "is")
  return (_sentence(["there", en_be, np_.en(), place[0]]),
          _sentence([place[1], "gab" if past else "gibt", "es", np_.de("acc")]))


def _likes(rng: random.Random) -> tuple[str, str]:
  """ "Anna likes red apples." / "Anna mag rote Äpfel." (generic plural object)"""
  subj = _subject(rng)
  pool = [n for n in THINGS if n.cats & {"food", "thing", "clothing", "vehicle", "animal",
                                         "readable"}]
  noun = rng.choice(pool)
  np_ = NounPhrase(noun, "a", True, _adjective_for(rng, noun, 0.7))
  past = rng.random() < 0.3
  if past:
    en_v, de_v = "liked", "mochten" if subj.plural else "mochte"
  else:
    en_v, de_v = ("like" if subj.plural else "likes"), ("mögen" if subj.plural else "mag")
  return _sentence([subj.en, en_v, np_.en()]), _sentence([subj.de, de_v, np_.de("acc")])


def _request(rng: random.Random) -> tuple[str, str]:
  """ "Please bring me the red book." / "Bitte bring mir das rote Buch." (du-imperative)"""
  en_v, de_v, cats = rng.choice([("bring", "bring", {"food", "thing", "readable", "drink"}),
                                 ("give", "gib", {"food", "thing", "readable", "drink"}),
                                 ("show", "zeig", {"thing", "readable", "clothing"}),
                                 ("buy", "kauf", {"food", "thing", "readable", "clothing",
                                                  "drink"})])
  np_ = _noun_phrase(rng, [n for n in THINGS + DRINKS if n.cats & cats])
  return (_sentence(["please", en_v, "me", np_.en()]),
          _sentence(["bitte", de_v, "mir", np_.de("acc")]))


_EN_DE_TEMPLATES: tuple[tuple[Callable[[random.Random], tuple[str, str]], float], ...] = (
    (_svo, 0.40), (_predicate, 0.10), (_location, 0.07), (_event, 0.06), (_departure, 0.04),
    (_home, 0.09), (_age, 0.04), (_price, 0.05), (_weather, 0.04), (_there_is, 0.05),
    (_likes, 0.04), (_request, 0.02))


def _pick(rng: random.Random, weighted):
  r = rng.random() * sum(w for _, w in weighted)
  for item, w in weighted:
    r -= w
    if r < 0:
      return item
  return weighted[-1][0]


def en_de_pair(rng: random.Random) -> tuple[str, str]:
  """One English sentence and its German translation (no length limit applied)."""
  return _pick(rng, _EN_DE_TEMPLATES)(rng)


# ---------------------------------------------------------------------------------------
# Spanish.


@dataclasses.dataclass(frozen=True)
class RomanceNoun:
  """A Spanish or French noun: singular, plural, gender ("m"/"f"), categories."""

  sg: str
  pl: str
  gender: str
  cats: frozenset[str]


@dataclasses.dataclass(frozen=True)
class RomanceAdjective:
  """Four forms (m sg, f sg, m pl, f pl); `copula` is "ser" or "estar" (Spanish)."""

  forms: tuple[str, str, str, str]
  cats: frozenset[str]
  copula: str = "ser"

  def form(self, gender: str, plural: bool) -> str:
    return self.forms[(1 if gender == "f" else 0) + (2 if plural else 0)]


def _romance_nouns(cats: str, rows: str, plural_rule: Callable[[str], str]) -> list[RomanceNoun]:
  """Parses "sg[/pl] g" items, ';'- or newline-separated."""
  out = []
  for item in rows.replace("\n", ";").split(";"):
    if not item.strip():
      continue
    *word, gender = item.split()
    sg, _, pl = " ".join(word).partition("/")
    out.append(RomanceNoun(sg, pl or plural_rule(sg), gender, frozenset(cats.split())))
  return out


def _es_plural(sg: str) -> str:
  if sg[-1] in "aeiouáéóú":
    return sg + "s"
  if sg.endswith("z"):
    return sg[:-1] + "ces"
  return sg + "es"


def _es_adj_forms(base: str) -> tuple[str, str, str, str]:
  if "/" in base:
    return tuple(base.split("/"))  # explicit m/f/mpl/fpl
  if base.endswith("o"):
    return base, base[:-1] + "a", base + "s", base[:-1] + "as"
  if base.endswith("e"):
    return base, base, base + "s", base + "s"
  pl = base[:-1] + "ces" if base.endswith("z") else base + "es"
  return base, base, pl, pl


def _es_adjectives(cats: str, words: str, copula: str = "ser") -> list[RomanceAdjective]:
  return [RomanceAdjective(_es_adj_forms(w), frozenset(cats.split()), copula)
          for w in words.split()]


ES_PEOPLE = _romance_nouns("person", """
profesor m; profesora f; médico m; médica f; niño m; niña f; hombre m; mujer f; madre f
padre m; hermano m; hermana f; abuelo m; abuela f; tío m; tía f; vecino m; vecina f
estudiante m; cocinero m; cocinera f; panadero m; camarero m; camarera f; conductor m
pintor m; cantante m; enfermera f; piloto m; soldado m; rey/reyes m; reina f; amigo m
amiga f; turista m; cliente m; trabajador m; ingeniero m; abogado m; abogada f
juez/jueces m; músico m; escritor m; científico m; alumno m; alumna f; jefe m; jardinero m
pescador m; carnicero m; actor m; actriz/actrices f; alcalde m; princesa f; príncipe m
hija f; hijo m; familia f; equipo m; policía m; granjero m; peluquero m; bailarina f
""", _es_plural)
ES_THINGS = _romance_nouns("food fruit", """
manzana f; plátano m; pera f; limón/limones m; tomate m; naranja f; melocotón/melocotones m
ciruela f; melón/melones m; uva f
""", _es_plural) + _romance_nouns("food", """
patata f; zanahoria f; huevo m; salchicha f; sopa f; pastel m; galleta f; pan/panes m
pizza f; bocadillo m; queso m; ensalada f; pepino m; tarta f; cebolla f
""", _es_plural) + _romance_nouns("thing", """
llave f; silla f; mesa f; lámpara f; taza f; plato m; vaso m; botella f; caja f; bolsa f
cesta f; cubo m; maleta f; paraguas/paraguas m; reloj/relojes m; cuchillo m; tenedor m
cuchara f; bolígrafo m; lápiz/lápices m; teléfono m; ordenador m; cámara f; radio f
espejo m; cuadro m; pelota f; vela f; martillo m; escalera f; cuerda f; toalla f
almohada f; manta f; cama f; sofá m; armario m; cartera f; anillo m; guitarra f; piano m
violín/violines m; tambor m; flor/flores f; piedra f; mapa m; billete m; sobre m; sello m
cazuela f; sartén/sartenes f; cepillo m; peine m; regalo m
tienda de campaña/tiendas de campaña f
mochila f; casco m; esponja f
""", _es_plural) + _romance_nouns("clothing", """
abrigo m; chaqueta f; sombrero m; gorra f; camisa f; vestido m; falda f; jersey/jerséis m
bufanda f; zapato m; bota f; calcetín/calcetines m; guante m; cinturón/cinturones m
corbata f; pantalón/pantalones m
""", _es_plural) + _romance_nouns("readable", """
libro m; periódico m; revista f; carta f; poema m; historia f; informe m; nota f
postal/postales f; receta f; novela f; diccionario m; menú m
""", _es_plural) + _romance_nouns("vehicle", """
coche m; autobús/autobuses m; camión/camiones m; bicicleta f; moto f; barco m; tren/trenes m
avión/aviones m; tractor m; taxi m; furgoneta f
""", _es_plural)
ES_ANIMALS = _romance_nouns("animal", """
perro m; gato m; caballo m; vaca f; cerdo m; oveja f; cabra f; gallina f; pato m; conejo m
ratón/ratones m; pájaro m; pez/peces m; zorro m; lobo m; oso m; león/leones m; elefante m
mono m; tigre m; rana f; búho m; ciervo m; ardilla f; serpiente f; mariposa f; abeja f
burro m; camello m; tortuga f
""", _es_plural)
ES_ADJECTIVES = (
    _es_adjectives("fruit thing clothing vehicle animal",
                   "rojo azul verde amarillo negro blanco gris marrón/marrón/marrones/marrones")
    + _es_adjectives("thing clothing vehicle readable animal", "grande pequeño viejo")
    + _es_adjectives("thing clothing vehicle readable",
                     "nuevo caro barato bonito feo moderno antiguo")
    + _es_adjectives("thing clothing vehicle", "pesado ligero redondo")
    + _es_adjectives("thing clothing vehicle", "limpio sucio roto mojado seco", "estar")
    + _es_adjectives("thing", "vacío lleno", "estar")
    + _es_adjectives("clothing readable", "largo corto")
    + _es_adjectives("readable", "interesante aburrido divertido famoso extraño")
    + _es_adjectives("vehicle animal", "rápido lento")
    + _es_adjectives("food", "fresco delicioso dulce", "ser")
    + _es_adjectives("food", "caliente frío", "estar")
    + _es_adjectives("fruit", "maduro", "estar")
    + _es_adjectives("person animal", "joven/joven/jóvenes/jóvenes tranquilo curioso")
    + _es_adjectives("person animal", "cansado enfermo contento", "estar")
    + _es_adjectives("person", "alto bajo rico inteligente valiente simpático amable serio "
                     "tímido estricto paciente famoso fuerte")
    + _es_adjectives("person", "triste nervioso ocupado enfadado", "estar")
    + _es_adjectives("animal", "salvaje peligroso gordo")
)
# 3sg, 3pl, preterite 3sg, preterite 3pl; categories of the object.
ES_VERBS = [(tuple(f.strip().split("|")), frozenset(c.split())) for f, c in (
    row.split(":") for row in """
compra|compran|compró|compraron : food thing clothing readable vehicle
vende|venden|vendió|vendieron : food thing clothing readable vehicle
ve|ven|vio|vieron : food thing clothing readable vehicle
busca|buscan|buscó|buscaron : thing clothing readable
encuentra|encuentran|encontró|encontraron : thing clothing readable
necesita|necesitan|necesitó|necesitaron : food thing clothing readable vehicle
lleva|llevan|llevó|llevaron : thing clothing readable
pierde|pierden|perdió|perdieron : thing clothing readable
come|comen|comió|comieron : food
lee|leen|leyó|leyeron : readable
escribe|escriben|escribió|escribieron : readable
limpia|limpian|limpió|limpiaron : thing vehicle
lava|lavan|lavó|lavaron : clothing vehicle
repara|reparan|reparó|repararon : thing vehicle
dibuja|dibujan|dibujó|dibujaron : thing vehicle fruit
tiene|tienen|tuvo|tuvieron : food thing clothing readable vehicle
trae|traen|trajo|trajeron : food thing readable
prepara|preparan|preparó|prepararon : food
pide|piden|pidió|pidieron : food
usa|usan|usó|usaron : thing vehicle
olvida|olvidan|olvidó|olvidaron : thing clothing readable
mira|miran|miró|miraron : thing clothing readable vehicle
regala|regalan|regaló|regalaron : thing clothing readable
guarda|guardan|guardó|guardaron : thing clothing readable
""".strip().splitlines())]
ES_NAMES = """Ana María Pedro Juan Carlos Lucía Elena Sofía Pablo Javier Carmen Isabel Miguel
Diego Laura Marta Alberto Andrés Rosa Teresa Jorge Luis Manuel Raquel Sergio Beatriz Pilar
Antonio Fernando Gabriel Alejandro Valeria Camila Mateo Daniela Tomás Inés Julia Óscar
Ramón Nuria Clara Hugo Irene Álvaro Rocío Emilio""".split()
ES_CITIES = """Madrid Barcelona Sevilla Valencia Bilbao Granada Málaga Toledo Salamanca
Zaragoza Córdoba Murcia Cádiz Oviedo Santander León Burgos Segovia Londres París Berlín
Múnich Hamburgo Colonia Viena Zúrich Ginebra Roma Milán Venecia Nápoles Florencia Lisboa
Oporto Ámsterdam Bruselas Copenhague Estocolmo Oslo Varsovia Praga Budapest Atenas Moscú
Estambul Tokio Pekín Dublín Edimburgo Lima Quito Bogotá Caracas Montevideo Santiago
Lyon Marsella Valparaíso Cusco Guadalajara Monterrey""".split()
ES_COUNTRIES = """Alemania Francia España Italia Inglaterra Japón China Canadá Brasil
Austria Polonia Suecia Noruega Dinamarca Finlandia Grecia Portugal Rusia México Australia
Irlanda Escocia Hungría Bélgica Chile Perú Argentina Colombia Venezuela Cuba Marruecos
Egipto Uruguay Bolivia Ecuador Paraguay""".split()
ES_PLACES = [p.strip() for p in """en el parque; en el jardín; en la cocina; en casa;
en la estación; en el mercado; en la ciudad; en la escuela; en la oficina; en el aeropuerto;
en el bosque; en la playa; en el pueblo; en el supermercado; en la panadería;
en la biblioteca; en el salón; en el hotel; en el tren; en el autobús; en el museo;
en el puerto; en las montañas; en la granja; junto al río; junto al lago; en la tienda;
en el hospital; en el restaurante; en el sótano; en el baño; en el dormitorio;
en el balcón; en el zoo; en la universidad; en la plaza; en la calle; en la iglesia;
en el teatro; en el cine; en el coche; en la clase""".replace("\n", " ").split(";")]
ES_WEEKDAYS = "lunes martes miércoles jueves viernes sábado domingo".split()
ES_MONTHS = ("enero febrero marzo abril mayo junio julio agosto septiembre octubre "
             "noviembre diciembre").split()
ES_EVENTS = _romance_nouns("event", """
concierto m; reunión/reuniones f; película f; clase f; partido m; fiesta f; boda f
conferencia f; curso m; mercado m; cena f; comida f; desayuno m; examen/exámenes m
carrera f; excursión/excursiones f; obra de teatro/obras de teatro f
""", _es_plural)
_ES_DEF = {("m", False): "el", ("f", False): "la", ("m", True): "los", ("f", True): "las"}
_ES_INDEF = {"m": "un", "f": "una"}
_ES_THIS = {("m", False): "este", ("f", False): "esta", ("m", True): "estos",
            ("f", True): "estas"}
_ES_POSS = {"mi": ("mi", "mis"), "su": ("su", "sus")}


def _es_np(rng: random.Random, nouns: Sequence[RomanceNoun], adj_p: float = 0.5,
           allow_number: bool = True, indefinite: bool = True, subject: bool = False,
           ) -> tuple[str, RomanceNoun, bool]:
  """A Spanish noun phrase: (text, noun, plural); a plural subject is never bare."""
  noun = rng.choice(nouns)
  dets = ["def", "def", "this", "poss"] + (["indef", "indef"] if indefinite else []) + (
      ["number"] if allow_number else [])
  det = rng.choice(dets)
  plural = det == "number" or (noun.sg == noun.pl) or rng.random() < 0.3
  if det == "indef" and plural:
    det = "bare"
  if det == "def":
    head = _ES_DEF[noun.gender, plural]
  elif det == "this":
    head = _ES_THIS[noun.gender, plural]
  elif det == "poss":
    head = rng.choice(("mi", "su", "nuestro"))
    if head == "nuestro":
      head = "nuestr" + ("a" if noun.gender == "f" else "o") + ("s" if plural else "")
    else:
      head = _ES_POSS[head][plural]
  elif det == "indef":
    head = _ES_INDEF[noun.gender]
  elif det == "number":
    # No numbers ending in one: "veintiún"/"veintiuna" agree with the noun.
    n = rng.choice([k for k in range(2, 100) if k % 10 != 1])
    head = number_es(n)
  elif subject:  # "Unos tíos compran ...", not "Tíos compran ..."
    head = "unas" if noun.gender == "f" else "unos"
  else:
    head = ""
  words = [head, noun.pl if plural else noun.sg]
  if rng.random() < adj_p:
    options = [a for a in ES_ADJECTIVES if a.cats & noun.cats]
    if options:
      words.append(rng.choice(options).form(noun.gender, plural))
  return " ".join(w for w in words if w), noun, plural


def _es_time(rng: random.Random, past: bool) -> str:
  r = rng.random()
  if r < 0.25:
    return "a " + _es_clock(rng)
  if past:
    if r < 0.4:
      return f"hace {number_es(rng.randint(2, 12))} {rng.choice(('días', 'semanas', 'años'))}"
    return rng.choice(["ayer", "la semana pasada", "el año pasado", "el mes pasado",
                       "anoche", "esta mañana", f"el {rng.choice(ES_WEEKDAYS)}",
                       f"en {rng.choice(ES_MONTHS)}"])
  return rng.choice(["hoy", "todos los días", "cada mañana", "por la mañana",
                     "por la tarde", "por la noche", "en verano", "en invierno",
                     "a menudo", f"los {rng.choice(ES_WEEKDAYS[:5])}", "los fines de semana"])


def _es_clock(rng: random.Random) -> str:
  """ "las ocho y media", "la una menos cuarto" (without the leading "a")."""
  h = rng.randint(1, 12)
  hour = "la una" if h == 1 else f"las {number_es(h)}"
  return hour + rng.choice(("", "", " y media", " y cuarto", " menos cuarto"))


def _es_place(rng: random.Random) -> str:
  if rng.random() < 0.3:
    return "en " + rng.choice(ES_CITIES)
  return rng.choice(ES_PLACES)


def _es_subject(rng: random.Random) -> tuple[str, str, bool]:
  """(text, gender, plural)."""
  if rng.random() < 0.35:
    return rng.choice(ES_NAMES), "m", False
  text, noun, plural = _es_np(rng, ES_PEOPLE, adj_p=0.3, subject=True)
  return text, noun.gender, plural


def spanish_sentence(rng: random.Random) -> str:
  """One Spanish sentence (no length limit applied)."""
  kind = _pick(rng, (("svo", 0.5), ("pred", 0.12), ("loc", 0.08), ("event", 0.07),
                     ("home", 0.08), ("age", 0.04), ("price", 0.04), ("weather", 0.03),
                     ("hay", 0.04)))
  past = rng.random() < 0.4
  if kind == "svo":
    forms, cats = rng.choice(ES_VERBS)
    subj, _, plural = _es_subject(rng)
    obj, _, _ = _es_np(rng, [n for n in ES_THINGS if n.cats & cats])
    verb = forms[(2 if past else 0) + (1 if plural else 0)]
    place = _es_place(rng) if rng.random() < 0.4 else ""
    time = _es_time(rng, past) if rng.random() < 0.5 else ""
    if time and rng.random() < 0.5:
      return _sentence([time, subj, verb, obj, place])
    return _sentence([subj, verb, obj, place, time])
  if kind == "pred":
    pool = ES_PEOPLE + ES_THINGS + ES_ANIMALS
    np_, noun, plural = _es_np(rng, pool, adj_p=0.0, allow_number=False, indefinite=False)
    adj = rng.choice([a for a in ES_ADJECTIVES if a.cats & noun.cats])
    be = {("ser", False): ("es", "era"), ("ser", True): ("son", "eran"),
          ("estar", False): ("está", "estaba"), ("estar", True): ("están", "estaban")}
    verb = be[adj.copula, plural][1 if past else 0]
    very = rng.choice(("", "", "muy", "bastante"))
    return _sentence([np_, verb, very, adj.form(noun.gender, plural)])
  if kind == "loc":
    np_, _, plural = _es_np(rng, ES_THINGS + ES_ANIMALS, allow_number=False, indefinite=False)
    verb = ("estaban" if plural else "estaba") if past else ("están" if plural else "está")
    if rng.random() < 0.3:
      return "¿" + _sentence(["dónde", verb, np_], "?")
    return _sentence([np_, verb, rng.choice(ES_PLACES)])
  if kind == "event":
    event = rng.choice(ES_EVENTS)
    np_ = f"{_ES_DEF[event.gender, False]} {event.sg}"
    if rng.random() < 0.4:
      np_ += " en " + rng.choice(ES_CITIES)
    if rng.random() < 0.2:
      return "¿" + _sentence(["a qué hora empieza", np_], "?")
    day = f"el {rng.choice(ES_WEEKDAYS)}" if rng.random() < 0.3 else ""
    return _sentence([np_, "empezó" if past else "empieza", day, "a", _es_clock(rng)])
  if kind == "home":
    subj, _, plural = _es_subject(rng)
    which = rng.choice(("vive", "trabaja", "es"))
    if which == "es":
      return _sentence([subj, "son" if plural else "es", "de", rng.choice(ES_COUNTRIES)])
    forms = {"vive": ("vive", "viven", "vivía", "vivían"),
             "trabaja": ("trabaja", "trabajan", "trabajaba", "trabajaban")}[which]
    return _sentence([subj, forms[(2 if past else 0) + (1 if plural else 0)], "en",
                      rng.choice(ES_CITIES)])
  if kind == "age":
    n = rng.choice([k for k in range(2, 100) if k % 10 != 1])
    return _sentence([rng.choice(ES_NAMES), "tenía" if past else "tiene", number_es(n),
                      "años"])
  if kind == "price":
    noun = rng.choice([n for n in ES_THINGS if n.sg != n.pl])
    adjs = [a for a in ES_ADJECTIVES if a.cats & noun.cats and a.copula == "ser"]
    np_ = f"{_ES_DEF[noun.gender, False]} {noun.sg} {rng.choice(adjs).form(noun.gender, False)}"
    n = rng.choice([k for k in range(2, 100) if k % 10 != 1] + [100 * k for k in range(1, 10)])
    if rng.random() < 0.25:
      return "¿" + _sentence(["cuánto cuesta", np_], "?")
    return _sentence([np_, "costaba" if past else "cuesta", number_es(n), "euros"])
  if kind == "weather":
    w = rng.choice([("hace frío", "hizo frío"), ("hace calor", "hizo calor"),
                    ("hace sol", "hizo sol"), ("hace viento", "hizo viento"),
                    ("hace buen tiempo", "hizo buen tiempo"),
                    ("hace mal tiempo", "hizo mal tiempo"), ("llueve", "llovió"),
                    ("nieva", "nevó")])
    when = rng.choice(("ayer", "el domingo", "la semana pasada")) if past else rng.choice(
        ("hoy", "en invierno", "en verano"))
    return _sentence([when, w[1 if past else 0], "en", rng.choice(ES_CITIES)])
  # "Hay tres perros negros en el parque."
  noun = rng.choice(ES_THINGS + ES_ANIMALS)
  if rng.random() < 0.5:
    n = rng.choice([k for k in range(2, 30) if k % 10 != 1])
    words = [number_es(n), noun.pl]
    plural = True
  else:
    words, plural = [_ES_INDEF[noun.gender], noun.sg], False
  options = [a for a in ES_ADJECTIVES if a.cats & noun.cats]
  if rng.random() < 0.6:
    words.append(rng.choice(options).form(noun.gender, plural))
  return _sentence(["había" if past else "hay", *words, rng.choice(ES_PLACES)])


# ---------------------------------------------------------------------------------------
# French.

_FR_VOWELS = "aeiouàâäéèêëîïôöùûüœ"
# Nouns with a mute h take elision ("l'homme"); all others starting with h are not listed.
_FR_H_MUET = ("homme", "hôtel", "hôpital", "horloge", "huile", "habit", "hiver", "heure",
              "histoire", "hélicoptère")


def _fr_elides(word: str) -> bool:
  w = word.lower()
  return w[:1] in _FR_VOWELS or w.startswith(_FR_H_MUET)


def _fr_plural(sg: str) -> str:
  if sg[-1] in "sxz":
    return sg
  if sg.endswith(("eau", "eu")):
    return sg + "x"
  if sg.endswith("al"):
    return sg[:-2] + "aux"
  return sg + "s"


def _fr_adj_forms(base: str) -> tuple[str, str, str, str]:
  if "/" in base:
    forms = base.split("/")
    if len(forms) == 2:  # m, f: plurals add s (x after -eux, nothing after -s/-x)
      m, f = forms
      return m, f, m if m[-1] in "sx" else m + "s", f + "s"
    return tuple(forms)
  if base.endswith("e"):
    return base, base, base + "s", base + "s"
  if base.endswith("é"):
    return base, base + "e", base + "s", base + "es"
  return base, base + "e", base + "s", base + "es"


def _fr_adjectives(cats: str, words: str) -> list[RomanceAdjective]:
  return [RomanceAdjective(_fr_adj_forms(w), frozenset(cats.split())) for w in words.split()]


FR_PEOPLE = _romance_nouns("person", """
professeur m; médecin m; enfant m; garçon m; femme f; homme m; mère f; père m; sœur f
frère m; grand-mère/grands-mères f; grand-père/grands-pères m; tante f; oncle m; voisin m
voisine f; étudiant m; étudiante f; cuisinier m; boulanger m; serveur m; serveuse f
chauffeur m; peintre m; chanteur m; chanteuse f; infirmière f; pilote m; soldat m; roi m
reine f; ami m; amie f; touriste m; client m; cliente f; ouvrier m; ingénieur m; avocat m
juge m; musicien m; écrivain m; chercheur m; élève m; patron m; jardinier m; pêcheur m
boucher m; acteur m; actrice f; bébé m; facteur m; maire m; princesse f; prince m; fille f
fils/fils m; famille f; équipe f; fermier m; policier m; danseuse f; coiffeur m
""", _fr_plural)
FR_THINGS = _romance_nouns("food fruit", """
pomme f; banane f; poire f; citron m; tomate f; orange f; pêche f; prune f; melon m
abricot m
""", _fr_plural) + _romance_nouns("food", """
pomme de terre/pommes de terre f; carotte f; œuf m; saucisse f; soupe f; gâteau m
biscuit m; pain m; pizza f; sandwich m; salade f; concombre m; tarte f; oignon m; croissant m
""", _fr_plural) + _romance_nouns("thing", """
clé f; chaise f; table f; lampe f; tasse f; assiette f; verre m; bouteille f; boîte f
sac m; panier m; seau m; valise f; parapluie m; horloge f; couteau m; fourchette f
cuillère f; stylo m; crayon m; téléphone m; ordinateur m; appareil photo/appareils photo m
radio f; miroir m; tableau m; ballon m; bougie f; marteau m; échelle f; corde f
serviette f; oreiller m; couverture f; lit m; canapé m; armoire f; portefeuille m
bague f; guitare f; piano m; violon m; tambour m; fleur f; pierre f; carte f; billet m
enveloppe f; timbre m; casserole f; brosse f; peigne m; cadeau m; tente f; casque m
éponge f; bol m; cahier m
""", _fr_plural) + _romance_nouns("clothing", """
manteau m; veste f; chapeau m; casquette f; chemise f; robe f; jupe f; pull m; écharpe f
chaussure f; botte f; chaussette f; gant m; ceinture f; cravate f; pantalon m
""", _fr_plural) + _romance_nouns("readable", """
livre m; journal/journaux m; magazine m; lettre f; poème m; histoire f; rapport m
note f; recette f; roman m; dictionnaire m; menu m
""", _fr_plural) + _romance_nouns("vehicle", """
voiture f; bus/bus m; camion m; vélo m; moto f; bateau m; train m; avion m; tracteur m
taxi m; camionnette f
""", _fr_plural)
FR_ANIMALS = _romance_nouns("animal", """
chien m; chat m; cheval/chevaux m; vache f; cochon m; mouton m; chèvre f; poule f
canard m; lapin m; souris/souris f; oiseau m; poisson m; renard m; loup m; ours/ours m
lion m; éléphant m; singe m; tigre m; grenouille f; chouette f; cerf m; écureuil m
serpent m; papillon m; abeille f; âne m; chameau m; tortue f
""", _fr_plural)
FR_ADJECTIVES = (
    _fr_adjectives("fruit thing clothing vehicle animal",
                   "rouge vert bleu noir blanc/blanche jaune gris/grise")
    + _fr_adjectives("thing clothing vehicle", "doré argenté violet/violette")
    + _fr_adjectives("thing clothing vehicle readable",
                     "cher/chère moderne ancien/ancienne neuf/neuve célèbre")
    + _fr_adjectives("thing clothing vehicle",
                     "lourd léger/légère propre sale cassé mouillé sec/sèche énorme")
    + _fr_adjectives("thing", "vide plein rond carré minuscule")
    + _fr_adjectives("clothing readable", "long/longue court")
    + _fr_adjectives("readable", "intéressant ennuyeux/ennuyeuse drôle étrange")
    + _fr_adjectives("vehicle animal", "rapide lent bruyant")
    + _fr_adjectives("food", "frais/fraîche/frais/fraîches délicieux/délicieuse sucré chaud "
                     "froid")
    + _fr_adjectives("fruit", "mûr")
    + _fr_adjectives("person animal", "fatigué malade calme curieux/curieuse")
    + _fr_adjectives("person", "content triste heureux/heureuse riche intelligent "
                     "courageux/courageuse poli fier/fière nerveux/nerveuse occupé "
                     "sérieux/sérieuse "
                     "gentil/gentille timide patient sportif/sportive célèbre")
    + _fr_adjectives("animal", "sauvage dangereux/dangereuse affamé")
)
# 3sg, 3pl, passé composé participle (with avoir); object categories.
FR_VERBS = [(tuple(f.strip().split("|")), frozenset(c.split())) for f, c in (
    row.split(":") for row in """
achète|achètent|acheté : food thing clothing readable vehicle
vend|vendent|vendu : food thing clothing readable vehicle
voit|voient|vu : food thing clothing readable vehicle
cherche|cherchent|cherché : thing clothing readable
trouve|trouvent|trouvé : thing clothing readable
porte|portent|porté : thing clothing
perd|perdent|perdu : thing clothing readable
mange|mangent|mangé : food
lit|lisent|lu : readable
écrit|écrivent|écrit : readable
ouvre|ouvrent|ouvert : thing readable
nettoie|nettoient|nettoyé : thing vehicle
lave|lavent|lavé : clothing vehicle
répare|réparent|réparé : thing vehicle
dessine|dessinent|dessiné : thing vehicle fruit
apporte|apportent|apporté : food thing readable
prépare|préparent|préparé : food
commande|commandent|commandé : food
utilise|utilisent|utilisé : thing vehicle
oublie|oublient|oublié : thing clothing readable
regarde|regardent|regardé : thing clothing readable vehicle
prend|prennent|pris : food thing readable
montre|montrent|montré : thing clothing readable
choisit|choisissent|choisi : food thing clothing readable vehicle
reçoit|reçoivent|reçu : thing clothing readable
""".strip().splitlines())]
FR_NAMES = """Marie Pierre Jean Sophie Claire Louis Hugo Camille Julien Nicolas Isabelle
Nathalie Philippe Thomas Antoine Chloé Léa Manon Lucas Mathieu Émilie Céline Françoise
Jacques Michel Sylvie Sandrine Olivier Laurent Aurélie Juliette Théo Inès Zoé Arthur Jules
Louise Alice Paul Margaux Benoît Mathilde Amélie Étienne Hélène Gabriel Victor Lucie
Romain""".split()
FR_CITIES = """Paris Lyon Marseille Toulouse Bordeaux Lille Nantes Strasbourg Montpellier
Rennes Grenoble Dijon Nice Reims Tours Angers Brest Limoges Avignon Nancy Metz Rouen Caen
Orléans Londres Berlin Munich Hambourg Cologne Francfort Vienne Zurich Genève Bâle Berne
Lausanne Rome Milan Venise Naples Florence Madrid Barcelone Séville Lisbonne Amsterdam
Bruxelles Bruges Liège Anvers Copenhague Stockholm Oslo Varsovie Prague Budapest Athènes
Moscou Tokyo Pékin Dublin Édimbourg Montréal Québec Dakar Casablanca""".split()
# "vient de ..." with the right form of de/du/d'.
FR_ORIGINS = [p.strip() for p in """de France; d'Allemagne; d'Espagne; d'Italie;
d'Angleterre; du Japon; de Chine; du Canada; du Brésil; d'Autriche; de Pologne; de Suède;
de Norvège; du Danemark; de Finlande; de Grèce; du Portugal; de Russie; du Mexique;
d'Australie; d'Irlande; d'Écosse; de Hongrie; de Belgique; du Chili; du Pérou;
d'Argentine; de Suisse; du Maroc; d'Égypte; du Sénégal; de Tunisie""".replace(
    "\n", " ").split(";")]
FR_PLACES = [p.strip() for p in """dans le parc; dans le jardin; dans la cuisine; à la gare;
au marché; en ville; à la maison; à l'école; au bureau; à l'aéroport; dans la forêt;
sur la plage; au village; au supermarché; à la boulangerie; à la bibliothèque;
dans le salon; à l'hôtel; dans le train; dans le bus; au musée; au port; à la montagne;
à la ferme; au bord de la rivière; au bord du lac; dans le magasin; à l'hôpital;
au restaurant; dans la cave; dans la salle de bain; dans la chambre; sur le balcon;
au zoo; à l'université; sur la place; dans la rue; à la poste; à l'église; au théâtre;
au cinéma; dans la voiture; dans la classe""".replace("\n", " ").split(";")]
FR_WEEKDAYS = "lundi mardi mercredi jeudi vendredi samedi dimanche".split()
FR_MONTHS = ("janvier février mars avril mai juin juillet août septembre octobre novembre "
             "décembre").split()
FR_EVENTS = _romance_nouns("event", """
concert m; réunion f; film m; cours/cours m; match/matchs m; fête f; mariage m
conférence f; marché m; dîner m; déjeuner m; examen m; course f; spectacle m; visite f
""", _fr_plural)


def _fr_def(noun: RomanceNoun, plural: bool) -> str:
  """ "le chien", "la pomme", "l'homme", "les enfants"."""
  if plural:
    return f"les {noun.pl}"
  if _fr_elides(noun.sg):
    return f"l'{noun.sg}"
  return f"{'la' if noun.gender == 'f' else 'le'} {noun.sg}"


def _fr_np(rng: random.Random, nouns: Sequence[RomanceNoun], adj_p: float = 0.5,
           allow_number: bool = True, indefinite: bool = True) -> tuple[str, RomanceNoun, bool]:
  """A French noun phrase: (text, noun, plural); adjectives after the noun."""
  noun = rng.choice(nouns)
  dets = ["def", "def", "this", "poss"] + (["indef", "indef"] if indefinite else []) + (
      ["number"] if allow_number else [])
  det = rng.choice(dets)
  plural = det == "number" or rng.random() < 0.3
  f = noun.gender == "f"
  vowel = _fr_elides(noun.sg)
  word = noun.pl if plural else noun.sg
  if det == "def":
    text = _fr_def(noun, plural)
  elif det == "this":
    head = "ces" if plural else ("cette" if f else ("cet" if vowel else "ce"))
    text = f"{head} {word}"
  elif det == "poss":
    which = rng.choice(("mon", "son", "notre", "leur"))
    if which in ("mon", "son"):
      s = which[0]
      head = f"{s}es" if plural else (f"{s}a" if f and not vowel else f"{s}on")
    elif which == "notre":
      head = "nos" if plural else "notre"
    else:
      head = "leurs" if plural else "leur"
    text = f"{head} {word}"
  elif det == "indef":
    text = f"{'des' if plural else ('une' if f else 'un')} {word}"
  else:
    # No numbers ending in one: "vingt et un(e)" agrees with the noun.
    n = rng.choice([k for k in range(2, 100) if k % 10 != 1])
    text = f"{number_fr(n)} {noun.pl}"
  if rng.random() < adj_p:
    options = [a for a in FR_ADJECTIVES if a.cats & noun.cats]
    if options:
      text += " " + rng.choice(options).form(noun.gender, plural)
  return text, noun, plural


def _fr_clock(rng: random.Random) -> str:
  """ "à huit heures et demie", "à une heure moins le quart", "à midi"."""
  h = rng.randint(1, 12)
  if h == 12 and rng.random() < 0.5:
    hour = rng.choice(("midi", "minuit"))
  else:
    hour = "une heure" if h == 1 else f"{number_fr(h)} heures"
  return "à " + hour + rng.choice(("", "", " et demie", " et quart", " moins le quart"))


def _fr_time(rng: random.Random, past: bool) -> str:
  r = rng.random()
  if r < 0.25:
    return _fr_clock(rng)
  if past:
    if r < 0.4:
      return f"il y a {number_fr(rng.randint(2, 12))} {rng.choice(('jours', 'semaines', 'ans'))}"
    return rng.choice(["hier", "la semaine dernière", "l'année dernière", "le mois dernier",
                       "hier soir", "ce matin", rng.choice(FR_WEEKDAYS) + " dernier",
                       "en " + rng.choice(FR_MONTHS)])
  return rng.choice(["aujourd'hui", "tous les jours", "chaque matin", "le matin", "le soir",
                     "en été", "en hiver", "souvent", "le " + rng.choice(FR_WEEKDAYS),
                     "le week-end"])


def _fr_place(rng: random.Random) -> str:
  if rng.random() < 0.3:
    return "à " + rng.choice(FR_CITIES)
  return rng.choice(FR_PLACES)


def _fr_subject(rng: random.Random) -> tuple[str, str, bool]:
  """(text, gender, plural)."""
  if rng.random() < 0.35:
    return rng.choice(FR_NAMES), "m", False
  text, noun, plural = _fr_np(rng, FR_PEOPLE, adj_p=0.3)
  return text, noun.gender, plural


def french_sentence(rng: random.Random) -> str:
  """One French sentence (no length limit applied)."""
  kind = _pick(rng, (("svo", 0.5), ("pred", 0.12), ("loc", 0.08), ("event", 0.07),
                     ("home", 0.08), ("age", 0.04), ("price", 0.04), ("weather", 0.03),
                     ("ilya", 0.04)))
  past = rng.random() < 0.4
  if kind == "svo":
    forms, cats = rng.choice(FR_VERBS)
    subj, _, plural = _fr_subject(rng)
    obj, _, _ = _fr_np(rng, [n for n in FR_THINGS if n.cats & cats])
    if past:
      verb = ("ont " if plural else "a ") + forms[2]
    else:
      verb = forms[1 if plural else 0]
    place = _fr_place(rng) if rng.random() < 0.4 else ""
    time = _fr_time(rng, past) if rng.random() < 0.5 else ""
    if time and rng.random() < 0.5:
      return _sentence([time + ",", subj, verb, obj, place])
    return _sentence([subj, verb, obj, place, time])
  if kind == "pred":
    np_, noun, plural = _fr_np(rng, FR_PEOPLE + FR_THINGS + FR_ANIMALS, adj_p=0.0,
                               allow_number=False, indefinite=False)
    adj = rng.choice([a for a in FR_ADJECTIVES if a.cats & noun.cats])
    verb = ("étaient" if plural else "était") if past else ("sont" if plural else "est")
    very = rng.choice(("", "", "très", "assez", "trop"))
    return _sentence([np_, verb, very, adj.form(noun.gender, plural)])
  if kind == "loc":
    np_, _, plural = _fr_np(rng, FR_THINGS + FR_ANIMALS, allow_number=False, indefinite=False)
    verb = ("étaient" if plural else "était") if past else ("sont" if plural else "est")
    if rng.random() < 0.3:
      return _sentence(["où", verb, np_], " ?")
    return _sentence([np_, verb, rng.choice(FR_PLACES)])
  if kind == "event":
    event = rng.choice(FR_EVENTS)
    np_ = _fr_def(event, False)
    if rng.random() < 0.4:
      np_ += " à " + rng.choice(FR_CITIES)
    if rng.random() < 0.2:
      return _sentence(["à quelle heure commence", np_], " ?")
    day = rng.choice(FR_WEEKDAYS) if rng.random() < 0.3 else ""
    return _sentence([np_, "a commencé" if past else "commence", day, _fr_clock(rng)])
  if kind == "home":
    subj, _, plural = _fr_subject(rng)
    which = rng.choice(("habite", "travaille", "vient"))
    if which == "vient":
      return _sentence([subj, "viennent" if plural else "vient", rng.choice(FR_ORIGINS)])
    if past:
      verb = ("ont " if plural else "a ") + which[:-1] + "é"
    else:
      verb = which + ("nt" if plural else "")
    return _sentence([subj, verb, "à", rng.choice(FR_CITIES)])
  if kind == "age":
    n = rng.randint(2, 99)
    return _sentence([rng.choice(FR_NAMES), "avait" if past else "a", number_fr(n), "ans"])
  if kind == "price":
    noun = rng.choice([n for n in FR_THINGS if n.sg != n.pl])
    adj = rng.choice([a for a in FR_ADJECTIVES if a.cats & noun.cats])
    np_ = f"{_fr_def(noun, False)} {adj.form(noun.gender, False)}"
    n = rng.randint(2, 99) if rng.random() < 0.7 else 100 * rng.randint(1, 9)
    if rng.random() < 0.25:
      return _sentence(["combien coûte", np_], " ?")
    return _sentence([np_, "coûtait" if past else "coûte", number_fr(n), "euros"])
  if kind == "weather":
    w = rng.choice([("fait froid", "a fait froid"), ("fait chaud", "a fait chaud"),
                    ("fait beau", "a fait beau"), ("fait mauvais", "a fait mauvais"),
                    ("pleut", "a plu"), ("neige", "a neigé"), ("y a du vent", "y a eu du vent")])
    when = rng.choice(("hier", "dimanche", "la semaine dernière")) if past else rng.choice(
        ("aujourd'hui", "en hiver", "en été"))
    return _sentence(["il", w[1 if past else 0], "à", rng.choice(FR_CITIES), when])
  # "Il y a trois chiens noirs dans le jardin."
  noun = rng.choice(FR_THINGS + FR_ANIMALS)
  if rng.random() < 0.5:
    n = rng.choice([k for k in range(2, 30) if k % 10 != 1])
    words, plural = [number_fr(n), noun.pl], True
  else:
    words, plural = ["une" if noun.gender == "f" else "un", noun.sg], False
  if rng.random() < 0.6:
    options = [a for a in FR_ADJECTIVES if a.cats & noun.cats]
    words.append(rng.choice(options).form(noun.gender, plural))
  return _sentence(["il y avait" if past else "il y a", *words, rng.choice(FR_PLACES)])


# ---------------------------------------------------------------------------------------
# Unique sentences and splits.

_PUNCT = re.compile(r"[^\w\s']")


def normalize(text: str) -> str:
  """The key sentences are compared by: lower case, no punctuation, single spaces."""
  text = unicodedata.normalize("NFC", text).lower().replace("-", " ")
  return " ".join(_PUNCT.sub(" ", text).split())


def word_count(text: str) -> int:
  """Whitespace-separated words, punctuation-only tokens ("?") not counted."""
  return sum(1 for w in text.split() if _PUNCT.sub("", w))


class _Stream:
  """Unique sentences (or pairs) within the word limits, from one seeded generator."""

  def __init__(self, make: Callable[[random.Random], tuple[str, ...]], seed: str,
               min_words: int, max_words: int, seen: set[str]):
    self._make, self._rng = make, random.Random(seed)
    self._min, self._max, self._seen = min_words, max_words, seen

  def next(self) -> tuple[str, ...]:
    for _ in range(100_000):
      texts = self._make(self._rng)
      if not all(self._min <= word_count(t) <= self._max for t in texts):
        continue
      keys = [normalize(t) for t in texts]
      if any(k in self._seen for k in keys):
        continue
      self._seen.update(keys)
      return texts
    raise RuntimeError("the grammar ran out of new sentences")


def make_splits(counts: Mapping[str, Mapping[str, int]], seed: int,
                min_words: int = MIN_WORDS, max_words: int = MAX_WORDS,
                ) -> dict[str, dict[str, list[Sentence]]]:
  """Sentences for each split and kind, deterministic from `seed`.

  Args:
    counts: split ("train", "dev", "test") -> kind (one of KINDS) -> how many.
      Missing entries mean 0.
    seed: the seed; the same seed and counts give the same sentences.
    min_words, max_words: length bounds in words (both sides of a pair).

  Returns:
    split -> kind -> list of Sentence. No normalized text occurs twice anywhere: English
    ASR, German ASR and S2TT share one stream of pairs unique on both sides.
  """
  for split, per_kind in counts.items():
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    for kind, n in per_kind.items():
      if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
      if n < 0:
        raise ValueError(f"count for {split}/{kind} must be >= 0, got {n}")
  seen: set[str] = set()
  en_de = _Stream(en_de_pair, f"{seed}/en-de", min_words, max_words, seen)
  es = _Stream(lambda r: (spanish_sentence(r),), f"{seed}/es", min_words, max_words, seen)
  fr = _Stream(lambda r: (french_sentence(r),), f"{seed}/fr", min_words, max_words, seen)
  out: dict[str, dict[str, list[Sentence]]] = {s: {k: [] for k in KINDS} for s in SPLITS}
  for split in _DRAW_SPLITS:
    for kind in _DRAW_KINDS:
      for _ in range(counts.get(split, {}).get(kind, 0)):
        if kind == "asr_es":
          sent = Sentence(es.next()[0], "es")
        elif kind == "asr_fr":
          sent = Sentence(fr.next()[0], "fr")
        else:
          en, de = en_de.next()
          sent = {"asr_en": Sentence(en, "en"), "asr_de": Sentence(de, "de"),
                  "s2tt_en_de": Sentence(en, "en", de)}[kind]
        out[split][kind].append(sent)
  check_disjoint({s: [t for sents in kinds.values() for t in sents]
                  for s, kinds in out.items()})
  return out


def check_disjoint(splits: Mapping[str, Iterable[Sentence | str]]) -> None:
  """Raises ValueError if a sentence text (or translation), normalized, is in two splits."""
  where: dict[str, str] = {}
  for split, items in splits.items():
    for item in items:
      texts = [item] if isinstance(item, str) else [item.text] + (
          [item.translation] if item.translation else [])
      for text in texts:
        key = normalize(text)
        if where.setdefault(key, split) != split:
          raise ValueError(f"sentence {text!r} is in both {where[key]!r} and {split!r}")
