"""Transform that carries the examples' recorded settings to the transformed examples."""
