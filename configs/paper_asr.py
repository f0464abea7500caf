"""The paper's ASR setup: Whisper-large-v3 encoder + Qwen2-7B, LoRA r16/a32 on q,k.

    python train.py --config=configs/paper_asr.py:method=uniavg,k=3 --workdir=DIR \
        --config.model.encoder_path=/ckpt/whisper-large-v3 \
        --config.model.llm_path=/ckpt/Qwen2-7B-Instruct \
        --config.data.train_manifests='("/data/ls960.jsonl",)' \
        --config.data.test_manifests='("/data/test-clean.jsonl","/data/test-other.jsonl")'

The model folders and manifests are yours to point at (nothing downloads). With no
paths the shapes below are used with random weights (`jax.eval_shape` checks, TPU
compile plans). Options: method (uniavg | unisamp | unseg | stack), k (1..6), lora
(false: projector only, the paper's open question), mesh (data,fsdp,tensor as
"1.8.1"), remat.
"""

from configs import base, common


def get_config(arg=None):
  opts = common.parse_arg(arg, method="uniavg", k=2, lora=True, mesh="-1.1.1",
                          remat="nothing_saveable")
  c = base.get_base_config()
  c.total_steps = 20000
  c.log_every = 50
  c.checkpoint_every = 1000
  c.mesh_shape = tuple(int(x) for x in opts.mesh.split("."))

  m = c.model
  m.encoder = dict(num_mel_bins=128, d_model=1280, encoder_layers=32,
                   encoder_attention_heads=20, encoder_ffn_dim=5120,
                   max_source_positions=1500)  # Whisper-large-v3.
  m.llm = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944,
               num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
               head_dim=128, tie_word_embeddings=False)  # Qwen2-7B.
  m.method = opts.method
  m.factor = opts.k
  m.use_lora = opts.lora
  m.lora_rank, m.lora_alpha, m.lora_targets = 16, 32.0, ("q_proj", "k_proj")
  m.lora_dropout = 0.05
  m.projector = "mlp"
  m.dtype = "bfloat16"
  m.param_dtype = "bfloat16"
  m.remat_policy = opts.remat
  m.attention_batch_block = 0  # accelerators: the (sharded) batch in one step, never a loop
  if not opts.lora:
    c.trainable = ("params/projector/.*",)

  # 30 s windows; prompt = ceil(1500 / k) audio tokens + ~64 text tokens, rounded up.
  audio_tokens = -(-1500 // opts.k)
  c.data.buckets = ((10.0, 64, _round(audio_tokens // 3 + 128)),
                    (30.0, 32, _round(audio_tokens + 128)))
  c.data.feature_cache = ""
  c.optim.learning_rate = 1e-4
  c.optim.warmup_steps = 500
  c.optim.weight_decay = 0.01
  c.loss.vocab_chunk = 256  # never the full [B, S, 152064] logits.
  c.eval.max_new_tokens = 256
  return c


def _round(n: int, multiple: int = 64) -> int:
  return -(-n // multiple) * multiple
