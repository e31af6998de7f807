"""The shared core: what training, serving and the operator must agree on.

Data schema, feature definitions, the model manifest and the model store live here and nowhere else.
"""
