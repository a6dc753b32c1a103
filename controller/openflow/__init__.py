"""The os-ken app: decodes OpenFlow events for the datapath runtime and encodes its message
values as os-ken objects. The only package that imports os-ken.
"""
