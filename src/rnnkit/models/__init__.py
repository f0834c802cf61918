"""Models built from the layers, and their decoding: encoder-decoder with attention
(:mod:`~rnnkit.models.seq2seq`), greedy, beam and sampled decoding
(:mod:`~rnnkit.models.decode`), CTC decoding and error rates (:mod:`~rnnkit.models.ctc`), the
image encoder (:mod:`~rnnkit.models.vision`) and pooling over time
(:mod:`~rnnkit.models.pooling`). They import the library and :mod:`rnnkit.data`, never a task.
"""
