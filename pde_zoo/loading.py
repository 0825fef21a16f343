def load(spec):
    raise NotImplementedError
