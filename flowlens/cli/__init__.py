"""The ``flowlens`` command: ``single``, ``episode``, ``compare``, ``report`` and ``demo`` (``main.main``).

The CLI only parses flags and prints; the work is done by ``flowlens.pipeline``.
"""
