"""Running a job's denoising beyond one txt2img pass: the SDXL refiner stage (and image-input tasks to come)."""
