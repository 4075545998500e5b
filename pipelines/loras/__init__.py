"""LoRAs as published (kohya, diffusers/PEFT, LyCORIS): read, mapped onto our modules, patched in and restored."""
