"""reconad's benchmarks: ``python benchmarks/run.py NAME`` or ``python -m benchmarks.run NAME``.

A package so that its modules import each other explicitly (``from .common import ...``)
whichever way it is started; see README.md here for what each benchmark measures.
"""
