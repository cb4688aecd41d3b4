# Sourced by the GPU-machine scripts: unpacks the Vulkan loader and the libglvnd
# libraries the NVIDIA ICD needs (carried in .device/gl, see device_pack.sh).
for f in .device/gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
export DENO_WEBGPU_BACKEND=vulkan NO_COLOR=1
