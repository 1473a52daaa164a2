"""Where trained models are kept, and the checks that what is read is what was written (pyarrow and files: no
Spark, no MLflow). ``model_index``: the index of a run's models, the one authority on what a version serves;
``packed_store``: one Parquet file of every group's model bytes, read by row group; ``model_table``: atomic
model-table versions behind a pointer or a view; ``staging``: registered stores copied where workers read them."""
