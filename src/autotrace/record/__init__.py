"""Record: what is kept of each traced call (spans today), behind one interface.
"""
