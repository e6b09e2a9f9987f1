"""The demo and its synthetic benchmark: `benchmark` scores a generator on held-out synthetic pairs with exact
ground truth; `report` trains the small demo model and writes the HTML report (`matebit demo`)."""
