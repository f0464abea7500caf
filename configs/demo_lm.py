"""The demo's LLM, stage one: a small Qwen2 pretrained on the demo corpus's text.

    python -m lalmjax.lm_pretraining --config=configs/demo_lm.py --out=runs/demo/lm
    python -m lalmjax.lm_pretraining --config=configs/demo_lm.py:tiny --out=/tmp/lm

The output folder is a Hugging Face Qwen2ForCausalLM with its tokenizer; an LALM config
names it as `model.llm_path`, where a real Qwen2 folder would go, and keeps it frozen.
A few minutes on two CPU cores. Option `tiny`: a width-32, 2-layer model for 30 steps
on less text (tests). A single field is overridden with `--config.total_steps=600`.
"""

import ml_collections

from configs import base, common


def get_config(arg=None):
  opts = common.parse_arg(arg, tiny=False)
  c = ml_collections.ConfigDict()
  c.seed = 0  # RNG seed: weight init and the draw of training examples.
  c.total_steps = 600  # optimizer steps.
  c.batch_size = 32  # rows (one example each) per step.
  c.max_length = 96  # tokens per row; a longer example is drawn again.
  c.log_every = 10  # steps between loss readings (progress bar, pretraining.json).
  c.tokenizer_vocab_size = 2048  # byte-level BPE vocabulary, special tokens included.

  # The architecture (Qwen2Config fields), random at the start: ~1.1M parameters, the
  # most that learns the grammars in the time (a 3.7M one, D=256, learns slower per
  # second on two CPU cores).
  c.model = ml_collections.ConfigDict(dict(
      vocab_size=0,  # embedding rows; 0 = the tokenizer's size rounded up to 64.
      hidden_size=128,  # model width D.
      intermediate_size=384,  # SwiGLU width F.
      num_hidden_layers=4,  # decoder blocks L.
      num_attention_heads=4,  # query heads N.
      num_key_value_heads=2,  # key/value heads K (grouped-query attention).
      head_dim=32,  # width of one head H.
      rms_norm_eps=1e-6,  # RMSNorm epsilon.
      rope_theta=10000.0,  # RoPE base frequency.
      max_position_embeddings=4096,  # context length written to config.json (RoPE has
      #                                no table; rows here are max_length long).
      tie_word_embeddings=True,  # the LM head is the embedding (no lm_head tensor).
  ))

  # Initial weights. Hugging Face's N(0, 0.02^2) everywhere suits widths in the
  # thousands; at D=128 it leaves attention near uniform and learning slow (measured:
  # loss 5.0 after 200 steps, 4.3 with the values below).
  c.init = ml_collections.ConfigDict(dict(
      kernel_scale=1.0,  # linear kernels ~ N(0, kernel_scale^2 / fan_in); 0 = N(0, 0.02^2).
      embedding_std=0.088,  # token embedding ~ N(0, std^2) (~1/sqrt(D)); 0 = 0.02.
  ))

  # What the LM reads (lalmjax/data/lm_text.py).
  c.text = ml_collections.ConfigDict(dict(
      train_manifests=("data/demo/train.jsonl", "data/demo_train/train.jsonl",
                       "data/demo_multilingual/train.jsonl"),  # corpus
      #                transcripts/translations used (one LM serves both demo configs).
      held_out_manifests=("data/demo/dev.jsonl", "data/demo/test.jsonl"),  # none of their
      #                   texts is trained on (generated duplicates are dropped).
      seed=1,  # textgen seed of the generated sentences (the corpus's is 0: meta.json).
      en_de_pairs=20000,  # generated English-German pairs (both sides are also ASR text).
      es_sentences=5000,  # generated Spanish sentences.
      fr_sentences=5000,  # generated French sentences.
      system_prompt="You are a helpful assistant.",  # the LALM's data.system_prompt.
      max_sentences=2,  # sentences in an ASR/S2TT example: 1 to this many, joined.
      # Example formats and their shares of the examples drawn.
      formats=ml_collections.ConfigDict(dict(
          prompt=0.15,  # the LALM prompt, empty audio markers, loss on the target.
          text_in_audio=0.3,  # the LALM prompt with the source text as the "audio".
          scrambled=0.35,  # text_in_audio ASR of shuffled words: learning to copy.
          stretched=0.0,  # text_in_audio ASR, each source token repeated (as audio
          #                 tokens repeat a word). Measured with 0.3 and max_length 160:
          #                 the demo's test WER 98% vs 104% without (noise), stage 1.7x
          #                 longer; off by default.
          plain=0.2,  # sentences each closed by <|endoftext|>, loss on all of it.
      )),
      stretch=(2, 10),  # repeats of a source token in "stretched", drawn per token (audio
      #                   at k=2 has ~7 tokens per text token, at k=6 ~2).
  ))

  # AdamW on a warmup + cosine schedule: the LALM's optimizer schema (configs/base.py).
  c.optim = base.get_base_config().optim
  c.optim.learning_rate = 5e-3
  c.optim.warmup_steps = 30
  c.optim.end_factor = 0.05
  c.optim.weight_decay = 0.0
  c.optim.b2 = 0.99

  if opts.tiny:
    c.total_steps = 30
    c.batch_size = 8
    c.log_every = 5
    c.optim.warmup_steps = 5
    c.tokenizer_vocab_size = 512
    c.model.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    c.init.embedding_std = 0.18  # ~1/sqrt(D)
    c.text.update(en_de_pairs=500, es_sentences=100, fr_sentences=100)
  return c
