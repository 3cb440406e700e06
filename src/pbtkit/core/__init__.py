"""The pure core of pbtkit: no I/O, no clock, no global random state.

Everything here takes a :class:`numpy.random.Generator` where it needs randomness and
returns values; the controller is the only place that carries decisions out.
"""
