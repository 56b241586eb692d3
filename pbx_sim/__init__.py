"""pbx_sim."""
