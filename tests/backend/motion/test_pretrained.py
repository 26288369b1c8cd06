"""Model folders and checkpoints: round trips, resumable training, and one actionable error per failure."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from backend.motion.pretrained import load_checkpoint, load_pretrained, save_checkpoint, save_pretrained
from backend.motion.tokenizer import MotionTokenizer, TokenizerConfig
from backend.motion.transformer import MaskedTokenTransformer, MaskedTransformerConfig
from shared.errors import InputError

BUILDERS = {
    "tokenizer": (TokenizerConfig, MotionTokenizer),
    "transformer": (MaskedTransformerConfig, MaskedTokenTransformer),
}


def tiny_models(seed: int = 0):
    torch.manual_seed(seed)
    tok_config = TokenizerConfig(
        feature_dim=6, group_columns=[[0, 1], [2, 3], [4, 5]], group_width=8, width=16, depth=1,
        dilations=(1,), codebook_size=16, code_dim=4, n_quantizers=2,
    )  # fmt: skip
    tr_config = MaskedTransformerConfig(
        codebook_size=16, n_groups=3, max_time_tokens=8, d_model=16, n_layers=1, n_heads=2, ff=32, dropout=0.1
    )
    tokenizer, transformer = MotionTokenizer(tok_config), MaskedTokenTransformer(tr_config)
    tokenizer(torch.randn(4, 16, 6))  # initialise the codebooks
    return {"tokenizer": tokenizer.eval(), "transformer": transformer.eval()}, {
        "tokenizer": tok_config,
        "transformer": tr_config,
    }


def save_tiny(folder, trained: bool = True):
    modules, configs = tiny_models()
    arrays = {"mean": np.arange(6, dtype=np.float32), "std": np.ones(6, dtype=np.float32)}
    save_pretrained(folder, modules, configs, arrays, {"fps": 30, "groups": ["a", "b", "c"]}, trained=trained)
    return modules


def test_round_trip_gives_identical_outputs(tmp_path):
    modules = save_tiny(tmp_path / "model")
    assert not any(p.suffix in {".pt", ".pkl", ".bin"} for p in (tmp_path / "model").iterdir())
    loaded = load_pretrained(tmp_path / "model", BUILDERS, required_arrays=("mean", "std"))
    x = torch.randn(2, 10, 6)
    assert loaded.trained and loaded.meta == {"fps": 30, "groups": ["a", "b", "c"]}
    assert loaded.configs["tokenizer"].dilations == (1,)
    np.testing.assert_array_equal(loaded.arrays["mean"], np.arange(6, dtype=np.float32))
    codes = modules["tokenizer"].encode(x)
    assert torch.equal(loaded.modules["tokenizer"].encode(x), codes)
    assert torch.equal(loaded.modules["tokenizer"].decode(codes), modules["tokenizer"].decode(codes))
    base = codes[..., 0]
    masked = torch.rand(base.shape) < 0.5
    assert torch.equal(loaded.modules["transformer"](base, masked), modules["transformer"](base, masked))


def test_only_the_requested_modules_are_built(tmp_path):
    save_tiny(tmp_path / "model")
    loaded = load_pretrained(tmp_path / "model", {"tokenizer": BUILDERS["tokenizer"]})
    assert set(loaded.modules) == {"tokenizer"}


def rewrite_config(folder, change):
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def test_folder_errors_name_the_folder_and_the_problem(tmp_path):
    folder = tmp_path / "model"
    with pytest.raises(InputError, match=r"'.*model' does not exist"):
        load_pretrained(folder, BUILDERS)
    folder.mkdir()
    with pytest.raises(InputError, match="has no config.json"):
        load_pretrained(folder, BUILDERS)
    save_tiny(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(InputError, match="has no weights file model.safetensors"):
        load_pretrained(folder, BUILDERS)
    save_tiny(folder)
    rewrite_config(folder, lambda c: c.update(format_version=99))
    with pytest.raises(InputError, match="format version 99"):
        load_pretrained(folder, BUILDERS)
    save_tiny(folder, trained=False)
    with pytest.raises(InputError, match="untrained"):
        load_pretrained(folder, BUILDERS)
    assert not load_pretrained(folder, BUILDERS, require_trained=False).trained
    save_tiny(folder)
    with pytest.raises(InputError, match="array 'scale' is missing"):
        load_pretrained(folder, BUILDERS, required_arrays=("scale",))
    with pytest.raises(InputError, match="has no module 'decoder'"):
        load_pretrained(folder, {"decoder": BUILDERS["tokenizer"]})


def test_tensor_errors_name_the_first_mismatch(tmp_path):
    folder = tmp_path / "model"
    modules, configs = tiny_models()
    modules["tokenizer"].register_buffer("surplus", torch.zeros(2))
    save_pretrained(folder, modules, configs, trained=True)
    with pytest.raises(InputError, match=r"module 'tokenizer'.*unexpected tensor 'surplus'"):
        load_pretrained(folder, BUILDERS)

    modules, configs = tiny_models()
    save_pretrained(folder, modules, configs, trained=True)
    tensors = load_file(folder / "model.safetensors")
    del tensors["modules.transformer.head.bias"], tensors["modules.transformer.head.weight"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(InputError, match=r"module 'transformer'.*tensor 'head.bias' is missing \(and 1 more\)"):
        load_pretrained(folder, BUILDERS)

    modules, configs = tiny_models()
    save_pretrained(folder, modules, configs, trained=True)
    rewrite_config(folder, lambda c: c["configs"]["transformer"]["fields"].update(d_model=8, ff=16))
    with pytest.raises(
        InputError, match=r"has shape \(16,\) in the file, the model built from its config expects \(8,\)"
    ):
        load_pretrained(folder, BUILDERS)

    rewrite_config(folder, lambda c: c["configs"]["transformer"]["fields"].update(flavour="x"))
    with pytest.raises(InputError, match="fields this version does not know: flavour"):
        load_pretrained(folder, BUILDERS)


def train_steps(modules, optimizer, generator, n):
    losses = []
    for _ in range(n):
        codes = torch.randint(0, 16, (4, 4, 3), generator=generator)
        loss, _ = modules["transformer"].training_loss(codes, generator=generator)
        x = torch.randn(4, 16, 6, generator=generator)
        recon, stats = modules["tokenizer"](x)
        loss = loss + modules["tokenizer"].loss(x, recon, stats)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def test_checkpoint_resumes_to_identical_next_steps(tmp_path):
    def fresh():
        modules, _ = tiny_models()
        for m in modules.values():
            m.train()
        params = [p for m in modules.values() for p in m.parameters()]
        return modules, torch.optim.AdamW(params, lr=1e-3)

    modules, optimizer = fresh()
    generator = torch.Generator().manual_seed(7)
    train_steps(modules, optimizer, generator, 3)
    rng = {"torch": torch.get_rng_state(), "data": generator.get_state()}
    save_checkpoint(tmp_path / "ckpt.safetensors", modules, {"adam": optimizer}, 3, rng, {"note": "three steps"})
    expected = train_steps(modules, optimizer, generator, 2)

    modules2, optimizer2 = fresh()
    checkpoint = load_checkpoint(tmp_path / "ckpt.safetensors", modules2, {"adam": optimizer2})
    assert checkpoint.step == 3 and checkpoint.extra == {"note": "three steps"}
    torch.set_rng_state(checkpoint.rng_state["torch"])
    generator2 = torch.Generator()
    generator2.set_state(checkpoint.rng_state["data"])
    assert train_steps(modules2, optimizer2, generator2, 2) == expected
    for name in modules:
        for (k, a), (_, b) in zip(modules[name].state_dict().items(), modules2[name].state_dict().items(), strict=True):
            assert torch.equal(a, b), k

    with pytest.raises(InputError, match="does not exist"):
        load_checkpoint(tmp_path / "none.safetensors", modules2)
    with pytest.raises(InputError, match="has no optimizer 'sgd'"):
        load_checkpoint(tmp_path / "ckpt.safetensors", modules2, {"sgd": optimizer2})
