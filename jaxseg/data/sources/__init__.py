"""One file per dataset kind (`config.data.name`), each registering with
`registry.DATASETS` how to check its `config.data` section and how to open its builder.

A new dataset kind is a new file here (plus, usually, its TFDS builder elsewhere in
`jaxseg.data`): `pipeline.load_split` and `validate_config` find it by name.
"""
