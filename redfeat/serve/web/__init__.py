"""The web side of ``redfeat serve``: JSON on the wire, drift bins, SVG plots and the page.

The HTTP API itself is ``redfeat.serve.http.create_app``; this package holds what it shares
with the page, so that each piece can be tested without a server.
"""
