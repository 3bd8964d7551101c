import socket

from django.core.management.base import BaseCommand

from reservations.services import node_register
from trainer.hardware import CpuHardware, detect


class Command(BaseCommand):
    help = "Register this machine as a node with the GPUs NVML finds (CPU devices when there is none)."

    def add_arguments(self, parser):
        parser.add_argument("--hostname", default=socket.gethostname(), help="Node name (default: this host's).")
        parser.add_argument("--cpu", type=int, metavar="N", help="Offer N CPU devices, even if GPUs exist.")

    def handle(self, *args, hostname, cpu, **options):
        hardware = CpuHardware(cpu) if cpu else detect()
        devices = hardware.devices()
        node = node_register(hostname=hostname, devices=devices)
        self.stdout.write(f"Registered {node.hostname} with {len(devices)} {hardware.kind} device(s):")
        for gpu in node.gpus.order_by("index"):
            state = "" if gpu.healthy else " (gone: marked unhealthy)"
            self.stdout.write(f"  id={gpu.pk} {gpu.name} {gpu.model} {gpu.memory_mb} MB{state}")
