"""Describe: *what* a span says, the same whichever backend saw the call.

``function`` computes once per function its name, static attributes and parameter
table, and binds each call's arguments to names; ``values`` turns Python values
into bounded, safe attribute values.
"""
