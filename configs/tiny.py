"""A random tiny encoder + tiny Qwen2 on the bundled demo corpus: smoke runs and tests.

    python train.py --config=configs/tiny.py --workdir=/tmp/w
    python train.py --config=configs/tiny.py:method=unseg,k=3 --workdir=/tmp/w3

Nothing is pretrained, so the loss falls but nothing is recognised: this config shows
that every part runs (data, sharded step, checkpoints, resume, export), in seconds per
step on a CPU. Options: method, k, cache (encoder-feature cache under the workdir).
"""

from configs import base, common


def get_config(arg=None):
  opts = common.parse_arg(arg, method="uniavg", k=2, cache=False)
  c = base.get_base_config()
  c.total_steps = 20
  c.log_every = 2
  c.checkpoint_every = 10
  c.optim.warmup_steps = 2
  c.optim.learning_rate = 1e-3

  c.model.method = opts.method
  c.model.factor = opts.k
  # A 10 s encoder window: the demo's utterances are shorter, and it is 3x cheaper.
  c.model.encoder.max_source_positions = 500
  c.model.lora_rank = 4
  c.model.lora_alpha = 8.0

  c.data.train_manifests = ("data/demo/train.jsonl",)
  c.data.test_manifests = ("data/demo/test.jsonl",)
  # Demo utterances are 1.5-6 s: one bucket of 8 rows (divides data x fsdp up to 8).
  c.data.buckets = ((10.0, 8, 384),)
  c.data.feature_cache = "features" if opts.cache else ""
  c.eval.max_new_tokens = 48
  return c
