from reservations import selectors


def notices(request):
    """The unread-notices banner on every page of a signed-in user."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    unread = selectors.notices_unread(user)
    # Lazy: counted and read only where base.html renders the banner.
    return {"unread_notices": unread}
