"""End-to-end recipes: from a data source to a measured model folder with its card (`matebit recipe ...`)."""
