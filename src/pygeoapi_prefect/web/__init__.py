"""pygeoapi's apps with the job-API fixes.

The framework-neutral contract, the Flask, Starlette and Django glue, the
request guard and the HTML pages.
"""
