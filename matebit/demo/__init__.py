"""The demo: `report` trains the small demo model on synthetic faces, scores it with the synthetic source of the
moved-exemplar protocol (`matebit.metrics.moved.synthetic`) and writes the HTML report (`matebit demo`)."""
