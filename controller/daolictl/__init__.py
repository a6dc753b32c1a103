"""daolictl, the operator's CLI: a client of the REST API only (imports nothing of the
controller's runtime).
"""
