"""The HF name rule, and the import arrows: the loader uses the models, never the reverse."""

import ast
import os

import numpy as np

from lalmjax import hf_names

MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "lalmjax", "models")


def test_default_rule():
  name, t = hf_names.default_hf_name(("layers_3", "self_attn", "q_proj", "kernel"))
  assert name == "layers.3.self_attn.q_proj.weight"
  np.testing.assert_array_equal(t(np.arange(6).reshape(2, 3)), np.arange(6).reshape(2, 3).T)
  assert hf_names.default_hf_name(("norm", "scale")) == ("norm.weight", None)
  assert hf_names.default_hf_name(("embed_tokens", "embedding")) == ("embed_tokens.weight", None)
  assert hf_names.default_hf_name(("layers_0", "q_proj", "bias")) == ("layers.0.q_proj.bias", None)
  assert hf_names.conv1d_from_torch(np.zeros((4, 3, 2))).shape == (2, 3, 4)


def test_models_never_import_the_checkpoint_loader():
  for name in sorted(os.listdir(MODELS)):
    if not name.endswith(".py"):
      continue
    tree = ast.parse(open(os.path.join(MODELS, name)).read())
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom):
        imported = [f"{node.module}.{a.name}" for a in node.names]
      elif isinstance(node, ast.Import):
        imported = [a.name for a in node.names]
      else:
        continue
      assert not any(i.startswith("lalmjax.checkpoints") for i in imported), (name, imported)
