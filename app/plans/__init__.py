"""Monthly sales plans per manager, the activity targets counted back from them, and the pace."""
