"""The main job in four languages: multilingual Whisper base (a pip-installed CTranslate2
export) + the demo's pretrained small LM, trained on English ASR, English->German S2TT
(data/demo_train) and German/Spanish/French ASR (data/demo_multilingual), scored on all of
data/demo/test.jsonl.

    python scripts/run_demo.py --config=configs/demo_multilingual.py   # -> runs/demo_multilingual

Same recipe and options as configs/demo.py (method, k, lora, steps, encoder).
"""

from configs import demo


def get_config(arg=None):
  c = demo.get_config(arg, encoder="pip:base")
  c.data.train_manifests = ("data/demo_train/train.jsonl", "data/demo_multilingual/train.jsonl")
  c.data.test_manifests = ("data/demo/test.jsonl",)
  return c
