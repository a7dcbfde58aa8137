"""The wrapt backend: matching functions are replaced by ``wrapt`` proxies.

``backend`` instruments modules (and undoes it) and owns the compiling of the
modules it traces; ``main`` is the source rewrite (each selected ``def`` gets
one more decorator) and the route from those decorators to the active backend,
knowing no backend; ``wrappers`` holds the proxies, one kind per calling
convention; ``cache`` stores rewritten code; ``stack`` spots functions that
must run unwrapped.
"""
