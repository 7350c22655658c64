"""Turn a data source (embedded synthetic, CheXpert, ISIC 2017, SimBA) into a MONAI datalist.

Modules:
    synthetic2d / thorax / dermoscopy   the embedded 2D generator and its two image flavours
    simba3d                             the embedded SimBA-like 3D generator (MNI152 template)
    embedded                            ``ensure_dataset``: generate once into a cache, reuse
    chexpert / isic2017 / simba_source  readers of the real sources' own layouts
    splits                              seeded, stratified, patient-level role assignment
    image_check                         every referenced image exists and opens
    datalist_build / datalist_io        check + split + write the datalist and its summary
    output_staging                      generated outputs appear only when complete
    cli                                 ``python -m data_prep <source> --out DIR ...``
"""
