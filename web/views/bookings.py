"""My bookings, a booking's page, notices. (Being written: placeholder views.)"""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def my_bookings(request):
    return render(request, "web/placeholder.html", {"what": "My bookings"})


@login_required
def notices(request):
    return render(request, "web/placeholder.html", {"what": "Notices"})
