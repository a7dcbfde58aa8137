"""Loading: seeing code before it runs.

``importhook`` is the ``sys.meta_path`` finder that reports each matching module
as it is imported (and compiles modules run by ``-m``); ``mainscript`` takes over
running the main script (``python app.py``) so that its functions can be traced.
"""
