"""The benchmark suite of issue 13: tenantctl against its Temporal floor (``make bench``).

Not a test: ``python -m bench [--quick]`` starts its own local stack on free ports, a product
worker and a floor worker, and prints ratios measured side by side in one run.
"""
