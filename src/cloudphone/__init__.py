"""cloudphone: the backend core of a cloud-phone platform."""
