"""The main job: a real pretrained Whisper + a small pretrained Qwen2-shaped LM on the
bundled demo corpus, the paper's recipe at CPU scale.

    make run            # = python scripts/run_demo.py --workdir=runs/demo

Stage 1 (`configs/demo_lm.py`) pretrains the LM on the corpus's training text into
WORKDIR/lm; this config then trains the projector + LoRA (r16, alpha 32, q/k) with the
Whisper tiny.en encoder (a pip-installed CTranslate2 export) and the LM frozen, on
cached encoder frames, and eval.py scores data/demo/test.jsonl. By hand:

    python train.py --config=configs/demo.py --workdir=runs/demo/train \
        --config.model.llm_path=runs/demo/lm
    python eval.py --config=configs/demo.py --workdir=runs/demo/train \
        --config.model.llm_path=runs/demo/lm

Options: method, k (the compression sweep varies these), lora (false: projector only),
encoder (pip:tiny.en | pip:base | a folder).
"""

from configs import base, common


def get_config(arg=None, encoder="pip:tiny.en", steps=600):
  """`encoder`, `steps`: defaults of those options (configs/demo_multilingual.py's differ)."""
  opts = common.parse_arg(arg, method="uniavg", k=2, lora=True, encoder=encoder, steps=steps)
  c = base.get_base_config()
  c.total_steps = opts.steps
  c.log_every = 25
  c.checkpoint_every = 200

  m = c.model
  m.encoder_path = opts.encoder
  m.llm_path = ""  # set to WORKDIR/lm by scripts/run_demo.py (stage 1's output)
  m.method, m.factor = opts.method, opts.k
  m.use_lora = opts.lora
  m.lora_rank, m.lora_alpha, m.lora_targets = 16, 32.0, ("q_proj", "k_proj")
  m.projector = "mlp"
  if not opts.lora:
    c.trainable = ("params/projector/.*",)

  c.data.train_manifests = ("data/demo/train.jsonl",)
  # tiny.en is English-only: English ASR and English->German S2TT are scored
  # (configs/demo_multilingual.py adds German/Spanish/French ASR with whisper base).
  c.data.test_manifests = ("data/demo/test_asr_en.jsonl", "data/demo/test_s2tt_en_de.jsonl")
  # Demo utterances are 1-6 s; prompts hold ceil(frames / k) audio tokens + the text.
  audio_tokens = -(-300 // opts.k)
  c.data.buckets = ((6.0, 16, _round(audio_tokens + 96)),)
  c.data.feature_cache = "features"  # under the workdir: the encoder runs once per file
  c.optim.learning_rate = 3e-3  # measured: train loss 0.88 at step 400 (1e-3: 1.6 at 290)
  c.optim.warmup_steps = 30
  c.optim.weight_decay = 0.0
  c.eval.max_new_tokens = 48
  return c


def _round(n: int, multiple: int = 32) -> int:
  return -(-n // multiple) * multiple
