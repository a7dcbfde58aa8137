"""Loading: seeing code before it runs.

``importhook`` is the ``sys.meta_path`` finder that reports each matching module
as it is imported (and compiles modules run by ``-m``); ``mainscript`` takes over
running the main script (``python app.py``) and has it compiled by the installed
finder; ``source`` compiles as a loader would. Loading asks the selector which
modules matter and hands code to callbacks a backend gave it: it imports nothing
above itself.
"""
