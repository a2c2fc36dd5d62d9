"""Adapters bundled for the SSM layers of other libraries, found without any user code.

Each entry maps a layer's fully-qualified class name to the adapter that reads and rebuilds it;
:func:`register_bundled` files them with the lazy adapter registry, so importing ssmcompile
never imports transformers, mambapy, lru-pytorch or s5-pytorch: an adapter module is loaded
only when a module of its layer class is looked up.

| library | layer | kind | reduction |
| --- | --- | --- | --- |
| lru-pytorch | ``LRU_pytorch.LRU.LRU`` | LTI | certified balanced truncation |
| s5-pytorch | ``s5.s5_model.S5`` | LTI | certified balanced truncation |
| mambapy | ``mambapy.mamba.MambaBlock`` | selective | data-driven (measured) |
| transformers | ``MambaMixer``, ``FalconMambaMixer`` | selective | data-driven (measured) |
| transformers | ``Mamba2Mixer`` | selective | data-driven (measured) |
"""

from __future__ import annotations

from ..adapters.base import register_lazy_block

_HF = "transformers.models"
BUNDLED: dict[str, str] = {
    "LRU_pytorch.LRU.LRU": "ssmcompile.thirdparty.lru_pytorch:LRUPytorchAdapter",
    "s5.s5_model.S5": "ssmcompile.thirdparty.s5_pytorch:S5PytorchAdapter",
    "mambapy.mamba.MambaBlock": "ssmcompile.thirdparty.mambapy:MambapyBlockAdapter",
    f"{_HF}.mamba.modeling_mamba.MambaMixer": "ssmcompile.selective.hf:HFMambaMixerAdapter",
    f"{_HF}.falcon_mamba.modeling_falcon_mamba.FalconMambaMixer":
        "ssmcompile.thirdparty.hf_falcon_mamba:HFFalconMambaMixerAdapter",
    f"{_HF}.mamba2.modeling_mamba2.Mamba2Mixer":
        "ssmcompile.thirdparty.hf_mamba2:HFMamba2MixerAdapter",
}


def register_bundled() -> None:
    for layer, adapter in BUNDLED.items():
        register_lazy_block(layer, adapter)


__all__ = ["BUNDLED", "register_bundled"]
