"""Turn a data source (embedded synthetic, CheXpert, ISIC 2017, SimBA) into a MONAI datalist."""
