"""lalmjax.data.textgen (sentences, splits, German agreement) and the data/demo corpus.

The corpus tests read the committed files and need no espeak-ng; one test remakes a few
utterances with scripts/make_corpus.py and compares bytes, skipped without espeak-ng.
"""

import importlib.util
import io
import json
import os
import random
import re
import shlex
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf

from lalmjax.data import textgen

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "data", "demo")
SPLITS = ("train", "dev", "test")
COUNTS = {"test": {"asr_en": 30, "asr_de": 10, "asr_es": 10, "asr_fr": 10, "s2tt_en_de": 10},
          "dev": {"asr_en": 10, "asr_de": 3, "asr_es": 3, "asr_fr": 3, "s2tt_en_de": 5},
          "train": {"asr_en": 300, "asr_de": 20, "asr_es": 20, "asr_fr": 20, "s2tt_en_de": 50}}


@pytest.fixture(scope="module")
def splits():
  return textgen.make_splits(COUNTS, seed=7)


def _all_texts(split_kinds):
  out = []
  for sents in split_kinds.values():
    for s in sents:
      out.append(s.text)
      if s.translation:
        out.append(s.translation)
  return out


# --- splits ----------------------------------------------------------------------------


def test_deterministic_from_seed(splits):
  assert textgen.make_splits(COUNTS, seed=7) == splits
  other = textgen.make_splits(COUNTS, seed=8)
  assert other["test"]["asr_en"] != splits["test"]["asr_en"]


def test_configured_counts(splits):
  for split in SPLITS:
    for kind in textgen.KINDS:
      assert len(splits[split][kind]) == COUNTS[split][kind], (split, kind)
  lang = {"asr_en": "en", "asr_de": "de", "asr_es": "es", "asr_fr": "fr", "s2tt_en_de": "en"}
  for split in SPLITS:
    for kind, sents in splits[split].items():
      assert all(s.lang == lang[kind] for s in sents)
      assert all((s.translation is not None) == (kind == "s2tt_en_de") for s in sents)


def test_splits_disjoint(splits):
  keys = {split: {textgen.normalize(t) for t in _all_texts(splits[split])} for split in SPLITS}
  assert not keys["train"] & keys["dev"]
  assert not keys["train"] & keys["test"]
  assert not keys["dev"] & keys["test"]
  # Unique within a split too.
  for split in SPLITS:
    assert len(keys[split]) == len(_all_texts(splits[split]))


def test_check_disjoint_raises_on_overlap():
  a = textgen.Sentence("The dog is old.", "en")
  b = textgen.Sentence("the dog is OLD", "en")
  with pytest.raises(ValueError, match="both"):
    textgen.check_disjoint({"train": [a], "test": [b]})
  textgen.check_disjoint({"train": [a], "test": [textgen.Sentence("The cat is old.", "en")]})


def test_growing_train_keeps_other_sentences():
  """English ASR training is drawn last: its count changes no other sentence."""
  small = textgen.make_splits(COUNTS, seed=3)
  bigger = {s: dict(k) for s, k in COUNTS.items()}
  bigger["train"]["asr_en"] = 500
  big = textgen.make_splits(bigger, seed=3)
  for split in SPLITS:
    for kind in textgen.KINDS:
      n = len(small[split][kind])
      assert big[split][kind][:n] == small[split][kind], (split, kind)


def test_sentence_length_bounds(splits):
  for split in SPLITS:
    for text in _all_texts(splits[split]):
      assert textgen.MIN_WORDS <= textgen.word_count(text) <= textgen.MAX_WORDS, text
      assert text[0].isupper() or text[0] == "¿", text
      assert text[-1] in ".?", text


def test_bad_counts_rejected():
  with pytest.raises(ValueError, match="unknown kind"):
    textgen.make_splits({"train": {"asr_it": 1}}, seed=0)
  with pytest.raises(ValueError, match="unknown split"):
    textgen.make_splits({"eval": {"asr_en": 1}}, seed=0)


# --- numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize("n, en, de, es, fr", [
    (1, "one", "eins", "uno", "un"),
    (16, "sixteen", "sechzehn", "dieciséis", "seize"),
    (17, "seventeen", "siebzehn", "diecisiete", "dix-sept"),
    (21, "twenty-one", "einundzwanzig", "veintiuno", "vingt et un"),
    (35, "thirty-five", "fünfunddreißig", "treinta y cinco", "trente-cinq"),
    (71, "seventy-one", "einundsiebzig", "setenta y uno", "soixante et onze"),
    (77, "seventy-seven", "siebenundsiebzig", "setenta y siete", "soixante-dix-sept"),
    (80, "eighty", "achtzig", "ochenta", "quatre-vingts"),
    (81, "eighty-one", "einundachtzig", "ochenta y uno", "quatre-vingt-un"),
    (91, "ninety-one", "einundneunzig", "noventa y uno", "quatre-vingt-onze"),
    (100, "one hundred", "einhundert", "cien", "cent"),
    (200, "two hundred", "zweihundert", "doscientos", "deux cents"),
    (105, "one hundred and five", "einhundertfünf", "ciento cinco", "cent cinq"),
])
def test_numbers(n, en, de, es, fr):
  assert (textgen.number_en(n), textgen.number_de(n), textgen.number_es(n),
          textgen.number_fr(n)) == (en, de, es, fr)


# --- German agreement ------------------------------------------------------------------


def _noun(en):
  return next(n for n in textgen.NOUNS if n.en == en)


def _adj(en, cat):
  return next(a for a in textgen.ADJECTIVES if a.en == en and cat in a.cats)


@pytest.mark.parametrize("noun, det, plural, case, expected", [
    ("apple", "the", False, "nom", "der rote Apfel"),
    ("apple", "the", False, "acc", "den roten Apfel"),
    ("apple", "a", False, "nom", "ein roter Apfel"),
    ("apple", "a", False, "acc", "einen roten Apfel"),
    ("apple", "my", False, "acc", "meinen roten Apfel"),
    ("apple", "this", False, "nom", "dieser rote Apfel"),
    ("apple", "the", True, "acc", "die roten Äpfel"),
    ("apple", "a", True, "acc", "rote Äpfel"),
    ("apple", "our", True, "nom", "unsere roten Äpfel"),
    ("cup", "the", False, "acc", "die rote Tasse"),
    ("cup", "a", False, "nom", "eine rote Tasse"),
    ("cup", "her", False, "acc", "ihre rote Tasse"),
    ("book", "the", False, "acc", "das rote Buch"),
    ("book", "a", False, "nom", "ein rotes Buch"),
    ("book", "a", False, "acc", "ein rotes Buch"),
    ("book", "his", False, "nom", "sein rotes Buch"),
    ("book", "this", False, "acc", "dieses rote Buch"),
])
def test_german_noun_phrase(noun, det, plural, case, expected):
  np_ = textgen.NounPhrase(_noun(noun), det, plural, _adj("red", "thing"))
  assert np_.de(case) == expected


def test_german_noun_phrase_special_forms():
  bear = _noun("bear")
  assert textgen.NounPhrase(bear, "the").de("acc") == "den Bären"
  assert textgen.NounPhrase(bear, "the").de("nom") == "der Bär"
  tired = _adj("tired", "person")
  teacher = _noun("teacher")
  assert textgen.NounPhrase(teacher, "a", adj=tired).de("nom") == "ein müder Lehrer"
  expensive = _adj("expensive", "thing")
  assert textgen.NounPhrase(_noun("car"), "the", adj=expensive).de("nom") == "das teure Auto"
  three = textgen.NounPhrase(_noun("apple"), "number", True, _adj("big", "thing"), count=3)
  assert (three.en(), three.de("acc")) == ("three big apples", "drei große Äpfel")
  milk = textgen.NounPhrase(_noun("glass of milk"), "a", adj=_adj("full", "drink"))
  assert (milk.en(), milk.de("acc")) == ("a full glass of milk", "ein volles Glas Milch")
  assert textgen.NounPhrase(_noun("umbrella"), "a").en() == "an umbrella"
  assert textgen.NounPhrase(_noun("car"), "a", adj=_adj("old", "vehicle")).en() == "an old car"


# Fixed examples: en_de_pair(random.Random(k)); checked by hand for correct German.
FIXED_PAIRS = [
    (1, "Ruth needed a bus in the hospital.", "Ruth hat einen Bus im Krankenhaus gebraucht."),
    (14, "My aunts built a yellow hotel on Thursday.",
     "Meine Tanten haben am Donnerstag ein gelbes Hotel gebaut."),
    (20, "There is a plate at home.", "Zu Hause gibt es einen Teller."),
    (28, "The gardeners look for fast goats in Munich at half past seven.",
     "Die Gärtner suchen um halb acht schnelle Ziegen in München."),
    (43, "My waiter brings these broken cupboards.",
     "Mein Kellner bringt diese kaputten Schränke."),
    (54, "There was a huge chair by the river.", "Am Fluss gab es einen riesigen Stuhl."),
    (89, "Last winter Sarah wrote five interesting poems.",
     "Letzten Winter hat Sarah fünf interessante Gedichte geschrieben."),
    (98, "Bakers saw the lion.", "Bäcker haben den Löwen gesehen."),
    (107, "Her hunter painted this strange cinema.",
     "Ihr Jäger hat dieses seltsame Kino gestrichen."),
    (396, "A busy woman wrote a note.", "Eine beschäftigte Frau hat eine Notiz geschrieben."),
]


@pytest.mark.parametrize("seed, en, de", FIXED_PAIRS)
def test_fixed_generated_pairs(seed, en, de):
  assert textgen.en_de_pair(random.Random(seed)) == (en, de)


# An independent check of every German noun phrase in many generated sentences: the
# determiner and the adjective ending must fit the noun's gender and number.
_DET_ENDING = {  # determiner -> {gender or "pl": allowed adjective endings}
    "der": {"m": {"e"}}, "den": {"m": {"en"}}, "die": {"f": {"e"}, "pl": {"en"}},
    "das": {"n": {"e"}}, "ein": {"m": {"er"}, "n": {"es"}}, "einen": {"m": {"en"}},
    "eine": {"f": {"e"}}, "dieser": {"m": {"e"}}, "diesen": {"m": {"en"}},
    "diese": {"f": {"e"}, "pl": {"en"}}, "dieses": {"n": {"e"}},
}
for _stem in ("mein", "sein", "ihr", "unser"):
  _DET_ENDING[_stem] = {"m": {"er"}, "n": {"es"}}
  _DET_ENDING[_stem + "en"] = {"m": {"en"}}
  _DET_ENDING[_stem + "e"] = {"f": {"e"}, "pl": {"en"}}
_NOMINATIVE_M = {"der", "ein", "dieser", "mein", "sein", "ihr", "unser"}
_ACCUSATIVE_M = {"den", "einen", "diesen", "meinen", "seinen", "ihren", "unseren"}
_PREPOSITIONS = {"in", "im", "an", "am", "auf", "mit", "aus", "nach", "vor", "zu", "um"}


def _german_analyses():
  forms = {}
  for n in textgen.NOUNS + textgen.EVENTS + textgen.DEPARTING:
    head_sg, head_pl = n.de.split()[0], n.de_pl.split()[0]
    forms.setdefault(head_sg, set()).add(n.gender)
    if n.de_acc:
      forms.setdefault(n.de_acc, set()).add(n.gender)
    forms.setdefault(head_pl, set()).add("pl")
  return forms


def test_german_agreement_in_generated_sentences():
  forms = _german_analyses()
  stems = {a.stem for a in textgen.ADJECTIVES}
  numbers = {textgen.number_de(n) for n in range(2, 100)}
  rng = random.Random(0)
  checked = strong = 0
  for _ in range(3000):
    _, de = textgen.en_de_pair(rng)
    words = re.sub(r"[.?]", "", de).lower().split()
    for i, word in enumerate(re.sub(r"[.?]", "", de).split()):
      if word not in forms:
        continue
      j, ending = i - 1, None
      if j >= 0:
        ending = next((e for e in ("en", "er", "es", "e")
                       if words[j].endswith(e) and words[j][:-len(e)] in stems), None)
        if ending is not None:
          j -= 1
      det = words[j] if j >= 0 else None
      if det in _PREPOSITIONS or (j >= 1 and words[j - 1] in _PREPOSITIONS):
        continue  # a fixed (dative) place or time phrase
      if det in _DET_ENDING:
        assert any(g in _DET_ENDING[det] and (ending is None or ending in _DET_ENDING[det][g])
                   for g in forms[word]), de
        checked += 1
        if forms[word] == {"m"} and j == 0:  # the subject: nominative
          assert det in _NOMINATIVE_M, de
        if forms[word] == {"m"} and words[j - 2:j] in (["gibt", "es"], ["gab", "es"]):
          assert det in _ACCUSATIVE_M, de  # "es gibt" takes the accusative
      elif det in numbers and ending is not None:  # "drei rote Äpfel": strong plural
        assert ending == "e" and "pl" in forms[word], de
        strong += 1
  assert checked > 2000 and strong > 20


def test_english_articles_in_generated_sentences():
  rng = random.Random(1)
  for _ in range(2000):
    en, _ = textgen.en_de_pair(rng)
    for art, word in re.findall(r"\b(a|an) (\w+)", en.lower()):
      assert art == textgen.indefinite_article_en(word), en


def test_spanish_and_french_agreement():
  """Determiner + noun (+ adjective) agree in generated Spanish and French."""
  cases = (
      (textgen.spanish_sentence, textgen.ES_PEOPLE + textgen.ES_THINGS + textgen.ES_ANIMALS,
       textgen.ES_ADJECTIVES,
       {"el": ("m", False), "la": ("f", False), "los": ("m", True), "las": ("f", True),
        "un": ("m", False), "una": ("f", False), "este": ("m", False),
        "esta": ("f", False), "estos": ("m", True), "estas": ("f", True)}),
      (textgen.french_sentence, textgen.FR_PEOPLE + textgen.FR_THINGS + textgen.FR_ANIMALS,
       textgen.FR_ADJECTIVES,
       {"le": ("m", False), "la": ("f", False), "un": ("m", False), "une": ("f", False),
        "ce": ("m", False), "cet": ("m", False), "cette": ("f", False)}),
  )
  verbs = {f for forms, _ in textgen.ES_VERBS + textgen.FR_VERBS for f in forms}
  for make, nouns, adjectives, dets in cases:
    noun_forms = {}
    for n in nouns:
      if " " not in n.sg:
        noun_forms.setdefault(n.sg, set()).add((n.gender, False))
        noun_forms.setdefault(n.pl, set()).add((n.gender, True))
    adj_forms = {}
    for a in adjectives:
      for k, form in enumerate(a.forms):
        adj_forms.setdefault(form, set()).add(("f" if k % 2 else "m", k >= 2))
    rng = random.Random(2)
    checked = 0
    for _ in range(2000):
      words = re.sub(r"[.?¿,]", "", make(rng)).lower().split()
      for i in range(len(words) - 1):
        if words[i] in dets and words[i + 1] in noun_forms:
          analyses = noun_forms[words[i + 1]]
          want = dets[words[i]]
          assert want in analyses, " ".join(words)
          checked += 1
          nxt = words[i + 2] if i + 2 < len(words) else None
          if nxt in adj_forms and not (nxt in noun_forms or nxt in dets or nxt in verbs):
            assert want in adj_forms[nxt], " ".join(words)
    assert checked > 500
  # Elision before a vowel or mute h.
  homme = next(n for n in textgen.FR_PEOPLE if n.sg == "homme")
  assert textgen._fr_def(homme, False) == "l'homme"  # pylint: disable=protected-access


# --- the committed corpus --------------------------------------------------------------


def _manifests():
  return sorted(f for f in os.listdir(DEMO) if f.endswith(".jsonl"))


def _read(name):
  with open(os.path.join(DEMO, name), encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def demo():
  if not os.path.isdir(DEMO):
    pytest.fail(f"{DEMO} is missing: run scripts/make_corpus.py")
  with open(os.path.join(DEMO, "meta.json"), encoding="utf-8") as f:
    meta = json.load(f)
  return meta, {name: _read(name) for name in _manifests()}


def test_demo_manifest_schema_and_audio(demo):
  _, manifests = demo
  assert {"train.jsonl", "dev.jsonl", "test.jsonl"} <= set(manifests)
  seen = set()
  for name in ("train.jsonl", "dev.jsonl", "test.jsonl"):
    for line in manifests[name]:
      for field in ("id", "audio", "duration", "task", "text", "source_lang", "target_lang"):
        assert field in line, (name, line.get("id"), field)
      assert line["id"] not in seen
      seen.add(line["id"])
      assert line["task"] in ("asr", "s2tt")
      assert line["source_lang"] in ("en", "de", "es", "fr")
      assert isinstance(line["text"], str) and line["text"]
      if line["task"] == "asr":
        assert line["target_lang"] == line["source_lang"]
        assert "translation" not in line
      else:
        assert (line["source_lang"], line["target_lang"]) == ("en", "de")
        assert isinstance(line["translation"], str) and line["translation"]
      path = os.path.join(DEMO, line["audio"])
      assert os.path.isfile(path), path
      info = sf.info(path)
      assert info.samplerate == 16000 and info.channels == 1, path
      assert (info.format, info.subtype) == ("FLAC", "PCM_16"), path
      assert abs(info.frames / info.samplerate - line["duration"]) <= 0.01, path
      assert 1.0 <= line["duration"] <= 8.0, path
  # Per-kind manifests hold the same lines as their split's manifest.
  for name, lines in manifests.items():
    split = name.split(".")[0].split("_")[0]
    if name != f"{split}.jsonl":
      assert all(line in manifests[f"{split}.jsonl"] for line in lines), name
  audio = set(os.listdir(os.path.join(DEMO, "audio")))
  assert audio == {i + ".flac" for i in seen}


def test_demo_splits_disjoint(demo):
  _, manifests = demo
  by_split = {}
  for split in SPLITS:
    by_split[split] = [textgen.Sentence(l["text"], l["source_lang"], l.get("translation"))
                       for l in manifests[f"{split}.jsonl"]]
  textgen.check_disjoint(by_split)
  keys = {s: {textgen.normalize(x.text) for x in v} for s, v in by_split.items()}
  assert not (keys["train"] & keys["test"]) and not (keys["train"] & keys["dev"])
  assert not keys["dev"] & keys["test"]


def test_demo_texts_regenerate_from_seed(demo):
  """The manifests' sentences are what textgen makes from meta.json's seed and counts."""
  meta, manifests = demo
  splits = textgen.make_splits(meta["requested"], meta["seed"])
  for split in SPLITS:
    for kind in textgen.KINDS:
      name = f"{split}_{kind}.jsonl"
      lines = manifests.get(name, [])
      assert len(lines) == meta["written"][split][kind], name
      expected = splits[split][kind][:len(lines)]
      assert [(l["text"], l.get("translation")) for l in lines] == [
          (s.text, s.translation) for s in expected], name


def test_demo_size_and_readme(demo):
  meta, manifests = demo
  total = os.lstat(DEMO).st_size
  for root, dirs, files in os.walk(DEMO):
    for name in dirs + files:
      total += os.lstat(os.path.join(root, name)).st_size
  assert total <= meta["max_mb"] * 1_000_000
  with open(os.path.join(DEMO, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  assert "python scripts/make_corpus.py" in readme
  assert len(manifests["train_asr_en.jsonl"]) > len(manifests["test_asr_en.jsonl"])


def test_multilingual_training_corpus_beside_the_demo(demo):
  """data/demo_multilingual: German/Spanish/French training speech drawn with the demo's
  seed and dev/test counts (so those splits are the demo's), only train spoken; its
  texts regenerate, its audio matches, none is a demo dev/test sentence."""
  root = os.path.join(REPO, "data", "demo_multilingual")
  with open(os.path.join(root, "meta.json"), encoding="utf-8") as f:
    meta = json.load(f)
  demo_meta, manifests = demo
  assert meta["seed"] == demo_meta["seed"]
  for split in ("dev", "test"):
    assert meta["requested"][split] == demo_meta["requested"][split]
  with open(os.path.join(root, "train.jsonl"), encoding="utf-8") as f:
    lines = [json.loads(x) for x in f]
  splits = textgen.make_splits(meta["requested"], meta["seed"])
  for kind in ("asr_de", "asr_es", "asr_fr"):
    mine = [x for x in lines if x["id"].startswith(f"train-{kind.replace('_', '-')}-")]
    assert len(mine) == meta["written"]["train"][kind] > 0, kind
    assert [x["text"] for x in mine] == [s.text for s in splits["train"][kind]], kind
    assert {x["source_lang"] for x in mine} == {kind[-2:]}
  for x in lines:
    info = sf.info(os.path.join(root, x["audio"]))
    assert info.samplerate == 16000 and abs(info.frames / 16000 - x["duration"]) <= 0.01
  held = {textgen.normalize(x["text"]) for split in ("dev", "test")
          for x in manifests[f"{split}.jsonl"]}
  held |= {textgen.normalize(x["translation"]) for split in ("dev", "test")
           for x in manifests[f"{split}.jsonl"] if x.get("translation")}
  assert not {textgen.normalize(x["text"]) for x in lines} & held


def _load_script():
  path = os.path.join(REPO, "scripts", "make_corpus.py")
  spec = importlib.util.spec_from_file_location("make_corpus", path)
  module = importlib.util.module_from_spec(spec)
  sys.modules["make_corpus"] = module
  spec.loader.exec_module(module)
  return module


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_demo_audio_regenerates_bitwise(demo):
  meta, manifests = demo
  make_corpus = _load_script()
  if make_corpus.espeak_version() != meta["versions"]["espeak-ng"]:
    pytest.skip(f"espeak-ng {make_corpus.espeak_version()} is not the corpus's "
                f"{meta['versions']['espeak-ng']}")
  picks = [manifests[f"test_{k}.jsonl"][0] for k in textgen.KINDS]
  picks.append(manifests["train_asr_en.jsonl"][-1])
  for line in picks:
    lang = line["source_lang"]
    voice, speed, pitch = make_corpus.choose_voice(meta["seed"], line["id"], lang)
    args = ["-v", voice, "-s", str(speed), "-p", str(pitch)]
    assert shlex.split(line["espeak"]) == args, line["id"]
    data = make_corpus.flac_bytes(make_corpus.synthesize(line["text"], args))
    with open(os.path.join(DEMO, line["audio"]), "rb") as f:
      assert f.read() == data, line["id"]


def test_demo_training_set_in_opus_beside_the_demo(demo):
  """data/demo_train: the demo's English ASR + S2TT training set at 9x data/demo's size,
  Opus-coded, drawn with the demo's seed and dev/test counts (so no dev/test sentence is
  in it; its training counts differ from data/demo's, so are its training sentences,
  under the same ids: the two training sets are used one at a time)."""
  root = os.path.join(REPO, "data", "demo_train")
  with open(os.path.join(root, "meta.json"), encoding="utf-8") as f:
    meta = json.load(f)
  demo_meta, manifests = demo
  assert meta["seed"] == demo_meta["seed"] and meta["format"] == "opus"
  for split in ("dev", "test"):
    assert meta["requested"][split] == demo_meta["requested"][split]
  with open(os.path.join(root, "train.jsonl"), encoding="utf-8") as f:
    lines = [json.loads(x) for x in f]
  splits = textgen.make_splits(meta["requested"], meta["seed"])
  for kind in ("asr_en", "s2tt_en_de"):
    mine = [x for x in lines if x["id"].startswith(f"train-{kind.replace('_', '-')}-")]
    assert len(mine) == meta["written"]["train"][kind] >= 300, kind
    assert [(x["text"], x.get("translation")) for x in mine] == [
        (s.text, s.translation) for s in splits["train"][kind]], kind
  assert len({x["id"] for x in lines}) == len(lines)
  for x in lines[::50]:
    info = sf.info(os.path.join(root, x["audio"]))
    assert (info.format, info.subtype) == ("OGG", "OPUS"), x["audio"]
    assert info.samplerate == 16000 and info.channels == 1
    assert abs(info.frames / 16000 - x["duration"]) <= 0.01, x["audio"]
  assert len(os.listdir(os.path.join(root, "audio"))) == len(lines)
  held = {textgen.normalize(x["text"]) for split in ("dev", "test")
          for x in manifests[f"{split}.jsonl"]}
  assert not {textgen.normalize(x["text"]) for x in lines} & held


def test_opus_bytes_are_deterministic_and_decode():
  make_corpus = _load_script()
  t = np.arange(16000) / 16000
  samples = (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
  a, b = make_corpus.opus_bytes(samples), make_corpus.opus_bytes(samples)
  assert a == b  # libsndfile's random Ogg serial is fixed
  decoded, sr = sf.read(io.BytesIO(a), dtype="float32")
  assert sr == 16000 and decoded.shape == samples.shape
  ref = samples / 32768.0
  assert np.corrcoef(decoded, ref)[0, 1] > 0.9  # lossy, but the same sound
  # Every page's checksum is valid: a corrupted CRC would make libsndfile/ogg skip it.
  fixed = bytearray(a)
  fixed[22] ^= 0xFF  # break the first page's CRC
  assert make_corpus.fixed_ogg_serial(bytes(fixed)) == a  # recomputed from the page
  with pytest.raises(ValueError, match="not an Ogg page"):
    make_corpus.fixed_ogg_serial(b"RIFF" + a[4:])


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_demo_training_set_regenerates_bitwise():
  root = os.path.join(REPO, "data", "demo_train")
  with open(os.path.join(root, "meta.json"), encoding="utf-8") as f:
    meta = json.load(f)
  make_corpus = _load_script()
  if make_corpus.espeak_version() != meta["versions"]["espeak-ng"]:
    pytest.skip(f"espeak-ng {make_corpus.espeak_version()} is not the corpus's "
                f"{meta['versions']['espeak-ng']}")
  if sf.__libsndfile_version__ != meta["versions"]["libsndfile"]:
    pytest.skip(f"libsndfile {sf.__libsndfile_version__} is not the corpus's")
  with open(os.path.join(root, "train.jsonl"), encoding="utf-8") as f:
    lines = [json.loads(x) for x in f]
  for line in (lines[0], lines[-1]):
    data = make_corpus.opus_bytes(make_corpus.synthesize(line["text"],
                                                         shlex.split(line["espeak"])))
    with open(os.path.join(root, line["audio"]), "rb") as f:
      assert f.read() == data, line["id"]
