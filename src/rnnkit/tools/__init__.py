"""The command's tools around the tasks: ``rnnkit bench`` (:mod:`~rnnkit.tools.bench`,
:mod:`~rnnkit.tools.peak_memory`), ``rnnkit gradflow``, ``rnnkit bench memory``
(:mod:`~rnnkit.tools.memory`), ``rnnkit inspect`` (:mod:`~rnnkit.tools.inspection`) and
``make demo`` (:mod:`~rnnkit.tools.demo`). Nothing below imports them.
"""
