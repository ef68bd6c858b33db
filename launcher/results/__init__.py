"""Results: reading run metrics (metrics_io), the tables of `launch aggregate` (table*, aggregate) and `launch plot`."""
