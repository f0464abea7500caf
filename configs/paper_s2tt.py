"""The paper's speech-to-text translation setup (CoVoST 2 style), on the ASR model.

    python train.py --config=configs/paper_s2tt.py:method=uniavg,k=3 --workdir=DIR \
        --config.model.encoder_path=/ckpt/whisper-large-v3 \
        --config.model.llm_path=/ckpt/Qwen2-7B-Instruct \
        --config.data.train_manifests='("/data/covost2_en_de.train.jsonl",)' \
        --config.data.test_manifests='("/data/covost2_en_de.test.jsonl",)'

Same model and options as `paper_asr.py`; translations are longer than transcripts,
so the prompts get more text room, and decoding more tokens.
"""

from configs import paper_asr


def get_config(arg=None):
  c = paper_asr.get_config(arg)
  c.data.buckets = tuple((s, b, n + 64) for s, b, n in c.data.buckets)
  c.eval.max_new_tokens = 320
  return c
