"""Hub publishing: push datasets and models, cards, plots and the artifacts written beside them."""
