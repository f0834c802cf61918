"""The one trainer and its parts: :mod:`~rnnkit.training.trainer` (the loop, clipping,
schedules, limits, metrics), :mod:`~rnnkit.training.checkpoint` (atomic safetensors
checkpoints), :mod:`~rnnkit.training.distributed` (several processes under torchrun),
:mod:`~rnnkit.training.config` (config dataclasses to and from the command line) and
:mod:`~rnnkit.training.heap` (the allocator setting the command turns on). They import the
library and :mod:`rnnkit.data`, never a task.
"""
