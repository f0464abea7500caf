"""The main job in four languages: multilingual Whisper base (a pip-installed CTranslate2
export) + the demo's pretrained small LM, trained on English ASR, English->German S2TT
(data/demo_train) and German/Spanish/French ASR (data/demo_multilingual), scored on all of
data/demo/test.jsonl.

    python scripts/run_demo.py --config=configs/demo_multilingual.py   # -> runs/demo_multilingual

Same recipe and options as configs/demo.py (method, k, lora, steps, encoder).

Measured (2026-12-02, 2-core CPU, LM stage reused from runs/demo): test WER en 81.42 %,
de 97.08 %, es 98.72 %, fr 100.00 %, BLEU en->de 7.68 (chrF 23.78). English (2000
training utterances) and S2TT (300) learn; 60 utterances per other language do not.
"""

from configs import demo


def get_config(arg=None):
  c = demo.get_config(arg, encoder="pip:base")
  c.data.train_manifests = ("data/demo_train/train.jsonl", "data/demo_multilingual/train.jsonl")
  c.data.test_manifests = ("data/demo/test.jsonl",)
  return c
