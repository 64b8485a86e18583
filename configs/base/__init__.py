"""Parts shared by the experiment files of configs/: the loop and optimizer (`loop`),
`config.data` sections (`data`) and Panoptic FPN's model fields (`panoptic`)."""
