"""One module per REST resource; the plumbing (app, deps, auth, errors, schemas) is one level up."""
