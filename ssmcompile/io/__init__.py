"""Safe checkpoint IO: safetensors only (no pickle), allow-listed builders, atomic writes."""

from .atomic import write_bytes_atomic
from .builders import (
    USER_MODEL,
    ModelBuilder,
    get_builder,
    register_builder,
    registered_builders,
    replay,
)
from .checkpoint import (
    load_checkpoint,
    model_tensors,
    read_checkpoint_meta,
    save_checkpoint,
    unwrap_module,
)
from .meta import FORMAT_VERSION, CheckpointMeta, ReductionEvent
from .model_replay import module_builder, replay_onto
from .tensorfile import load_tensors, save_tensors_atomic

__all__ = [
    "FORMAT_VERSION",
    "ReductionEvent",
    "CheckpointMeta",
    "ModelBuilder",
    "register_builder",
    "get_builder",
    "registered_builders",
    "replay",
    "replay_onto",
    "module_builder",
    "USER_MODEL",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_meta",
    "save_tensors_atomic",
    "load_tensors",
    "write_bytes_atomic",
    "model_tensors",
    "unwrap_module",
]
