"""The wrapt backend: matching functions are replaced by ``wrapt`` proxies.

``backend`` instruments modules (and undoes it); ``wrappers`` holds the proxies,
one kind per calling convention; ``main`` rewrites modules that are run rather
than imported.
"""
