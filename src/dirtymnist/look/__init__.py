"""Looking at runs: the experiment table, the HTML report, heat maps, the serve page."""
