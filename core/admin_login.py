"""The admin's sign-in (the console's too): its failed attempts limited per client address, per
username and all together, and the cookie by which a browser that signed in as a user before is
exempt from the limits an attacker can reach on purpose (its username's, everyone's), for a few
failures of its own (OWASP's device cookies)."""
from __future__ import annotations

import hashlib
import logging
import unicodedata
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.crypto import constant_time_compare, get_random_string, salted_hmac

from core import log_volume
from core.errors import database_unreachable, storage_full
from core.ratelimit import ceiling_seconds
from core.throttling import (
    AdminLoginRateThrottle,
    FailureRateThrottle,
    RateThrottle,
    login_username,
)

logger = logging.getLogger(__name__)

# Set on a successful sign-in: the user, the username, a digest of the user's password hash and a
# nonce (each sign-in's cookie with failures of its own: AdminLoginDeviceRateThrottle), signed. It
# proves only that this browser signed in as that user (knew the password) within
# DEVICE_MAX_AGE_SECONDS, and since: a new password voids it, as it ends the user's sessions
# (Django's session auth hash); it opens no session.
DEVICE_COOKIE = "admin_signed_in_as"
DEVICE_SALT = "core.admin_login.device"
DEVICE_MAX_AGE_SECONDS = 90 * 24 * 3600
# Failed logins an hour a cookie exempts from the username's and everyone's limits; past them it
# is as no cookie. A few mistypes are its owner's; more are someone guessing with a copy of it (a
# botnet, each address under its own limit). Fixed, not ADMIN_LOGIN_FAILURES_PER_USERNAME_PER_HOUR:
# that one at 0 would have left a copy exempting a botnet from everyone's limit without end.
DEVICE_FAILURES_PER_HOUR = 5

# The global limit's refusals: one WARNING line a minute per process, saying how many.
_refusals = log_volume.CountedPerKey()
# The username limit's refusals, per username: one WARNING line a minute per process and username.
_username_refusals = log_volume.CountedPerKey()
# How much of a username (an attacker's text) its line quotes.
LOGGED_USERNAME_CHARACTERS = 64
# The logins of spent device cookies, per user: one WARNING line a minute per process and user.
_spent_devices = log_volume.CountedPerKey()


class AdminLoginUsernameRateThrottle(FailureRateThrottle):
    """Failed logins to the admin per username, whatever the address
    (ADMIN_LOGIN_FAILURES_PER_USERNAME_PER_HOUR): guesses at one account spread over many
    addresses (a botnet), each under its address's limit. Counted for any username, existing or
    not, so that its 429 tells nothing of which exist; keyed by a digest of the username as
    `login_username` takes it, so that Redis holds no usernames. `login_limited` exempts the
    browsers that signed in as that user before: an attacker reaching the limit on purpose does
    not lock the account's owner out of a browser the owner used."""

    scope = "admin_login_username"
    username = ""  # as counted (login_username), which a refusal's line names

    def rate_for(self, request: HttpRequest, view: Any) -> str | None:
        rate = settings.ADMIN_LOGIN_FAILURES_PER_USERNAME_PER_HOUR
        return f"{rate}/hour" if rate and request.method == "POST" else None

    def get_cache_key(self, request: HttpRequest, view: Any) -> str | None:
        self.username = login_username(request.POST.get("username", ""))
        if not self.username:
            return None  # the form refuses it unchecked: no password was tried
        digest = hashlib.sha256(self.username.encode()).hexdigest()[:32]
        return f"throttle:{self.scope}:{digest}"

    def throttle_failure(self) -> bool:
        """DRF's hook on a refusal, which is logged: someone guessing at one username (a staff
        user's, most likely) from many addresses, which the address's limit does not see. Said
        once a minute per username, not once a refusal; each username logged has spent its
        failures first (each one in everyone's count too), which bounds the lines an attacker
        can have written with usernames of its own. The username is the client's text: quoted
        as Python does (its control characters escaped, no line of its own) and cut short."""
        refused = _username_refusals.due(self.username)
        if refused:
            cut = len(self.username) > LOGGED_USERNAME_CHARACTERS
            logger.warning(
                "Admin logins refused unchecked for username %r (as the limit counts it: case folded%s): it "
                "has failed ADMIN_LOGIN_FAILURES_PER_USERNAME_PER_HOUR (%s) logins in the last hour, "
                "whatever the address; %s refused 429 since this process's previous line for it (this "
                "line at most once a minute per process and username). Likely guesses at its password "
                "from many addresses; browsers that signed in as that user before are still exempt "
                "(docs/deployment.md, the device cookie)",
                self.username[:LOGGED_USERNAME_CHARACTERS],
                f"; its first {LOGGED_USERNAME_CHARACTERS} characters" if cut else "",
                settings.ADMIN_LOGIN_FAILURES_PER_USERNAME_PER_HOUR, refused,
            )
        return False


class AdminLoginGlobalRateThrottle(FailureRateThrottle):
    """Failed logins to the admin per minute, every address and username together
    (ADMIN_LOGIN_FAILURES_PER_MINUTE). Each login checked costs a password hash (PBKDF2, about
    0.25 s of CPU) on the processors the API runs on: a botnet posting random usernames, each
    address and each username under its own limit, could spend them all and slow every
    client's requests. Past it no password is hashed; browsers that signed in before are exempt."""

    scope = "admin_login_all"
    rate_setting = "ADMIN_LOGIN_FAILURES_PER_MINUTE"

    def rate_for(self, request: HttpRequest, view: Any) -> str | None:
        return super().rate_for(request, view) if request.method == "POST" else None

    def get_cache_key(self, request: HttpRequest, view: Any) -> str | None:
        return f"throttle:{self.scope}"  # one count for all

    def throttle_failure(self) -> bool:
        """DRF's hook on a refusal, which is logged: unlike the other limits, which refuse an
        attacker's own address or the username it guesses at, this one refuses the operators too
        (but in browsers that signed in before). Said once a minute, not once a refusal, which an
        attacker could have written at will."""
        refused = _refusals.due("")
        if refused:
            logger.warning(
                "Admin logins refused unchecked: every address together has failed "
                "ADMIN_LOGIN_FAILURES_PER_MINUTE (%s) logins in the last minute; %s refused 429 since "
                "this process's previous line (this line at most once a minute per process)",
                settings.ADMIN_LOGIN_FAILURES_PER_MINUTE, refused,
            )
        return False


class AdminLoginDeviceRateThrottle(FailureRateThrottle):
    """Failed logins to the admin per device cookie (DEVICE_FAILURES_PER_HOUR), whatever the
    address: each failure in a browser the cookie exempts spends one. Keyed by a digest of the
    cookie's value, unique to the sign-in that set it (its nonce), so that one copied spends its
    own browser's exemption only, and Redis holds no cookies."""

    scope = "admin_login_device"

    def __init__(self, *, username: str) -> None:
        super().__init__()
        self.username = username  # the user the cookie is of, whom a refusal's line names

    def rate_for(self, request: HttpRequest, view: Any) -> str | None:
        return f"{DEVICE_FAILURES_PER_HOUR}/hour" if request.method == "POST" else None

    def get_cache_key(self, request: HttpRequest, view: Any) -> str | None:
        digest = hashlib.sha256(request.COOKIES[DEVICE_COOKIE].encode()).hexdigest()[:32]
        return f"throttle:{self.scope}:{digest}"

    def throttle_failure(self) -> bool:
        """DRF's hook on a refusal, which is logged: a cookie past its failures is most likely a
        copy of it (stolen) guessing at its user's password. Said once a minute per user, not
        once a refusal, nor once a cookie (each sign-in mints one): a line a minute per staff user
        at most, whatever an attacker does."""
        spent = _spent_devices.due(self.username)
        if spent:
            logger.warning(
                "Admin login: a device cookie (admin_signed_in_as) of staff user %s has failed "
                "DEVICE_FAILURES_PER_HOUR (%s) logins in the last hour and no longer exempts its browser "
                "from the username's and everyone's limits; logins with a spent cookie of that user "
                "since this process's previous line: %s (this line at most once a minute per process "
                "and user). Likely a stolen copy guessing the password: change that user's password, "
                "which voids every cookie of it (docs/deployment.md, the device cookie)",
                self.username, DEVICE_FAILURES_PER_HOUR, spent,
            )
        return False


def login_limited(request: HttpRequest, login: Callable[[], HttpResponse]) -> HttpResponse:
    """`login` (Django's admin login), its POSTs refused 429 once the client's address, the
    username tried, or every address together has spent its failed attempts. The last two are
    an attacker's to reach on purpose, so they do not apply in a browser that signed in as that
    user before (which costs a query only where its cookie names the username posted) until its
    cookie has failed DEVICE_FAILURES_PER_HOUR logins: a copy of it exempts a botnet that far."""
    by_address = AdminLoginRateThrottle()
    if not by_address.allow_request(request, None):
        return _refused(by_address, "Too many login attempts from your address")
    counted: list[FailureRateThrottle] = [by_address]
    try:
        # The browser's cookie is read against its user's row, inside the outage's handling
        # below as the form's check is: outside it, an operator whose browser signed in before
        # spent the address's places on each retry through an outage, and found the admin
        # locked once it was over.
        device = _exempting_device(request)
        if device is not None:
            counted.append(device)
        else:
            # The narrower limits first: a POST one of them refuses never reaches the global
            # count, so one address, or guesses at one username, cannot spend everyone's.
            limits = [
                # The same for every username, existing or not.
                (AdminLoginUsernameRateThrottle(), "Too many failed login attempts for this username"),
                (AdminLoginGlobalRateThrottle(), "Too many failed login attempts on this site"),
            ]
            for throttle, reason in limits:
                if not throttle.allow_request(request, None):
                    # No password was checked: the places the POST took are given back.
                    for taken in counted:
                        taken.give_back()
                    return _refused(throttle, reason)
                counted.append(throttle)
        response = login()
    except Exception as exc:
        # Answered 503 (core/middleware.py OutageMiddleware) for the service's outage, not a
        # wrong password: with the database out of reach the user's row could not be read to
        # check one, and a full disk fails only a write, which only a right password makes (the
        # session it opens). Counted, an operator retrying through an outage would find the
        # admin locked once it is over.
        if database_unreachable(exc) or storage_full(exc):
            for throttle in counted:
                throttle.give_back()
        raise
    # A POST is answered with a redirect only once it logged someone in (a failure shows the
    # form again): that attempt does not count.
    if request.method == "POST" and response.status_code == 302:
        for throttle in counted:
            throttle.give_back()
        _remember_browser(response, request.user)  # type: ignore[arg-type]  # signed in: a user
    return response


def password_change_remembered(request: HttpRequest, change: Callable[[], HttpResponse]) -> HttpResponse:
    """`change` (Django's admin password change, or the user admin's password page, which
    changes anyone's), the browser that changed its own user's password given a cookie of the
    new one: the new password voids the old one's cookie in every browser, this one too, whose
    session goes on (Django keeps it). Without a new cookie, an operator who changed the
    password as an attack went on was locked out of every browser by the limits the cookie
    exempts from, once that session ended. None where another user's password was changed, nor
    where password sign-in was turned off (the user admin's page can)."""
    user: AbstractBaseUser = request.user  # type: ignore[assignment]  # the admin's views: a staff user
    before = user.password
    response = change()
    # A redirect answers a change made (an error shows the form again), but also the user
    # admin's page refusing a conflicting form; and that page changes a row of its own, maybe
    # another user's, not request.user: the signed-in user's password is read again, compared.
    if request.method == "POST" and response.status_code == 302:
        user.refresh_from_db(fields=["password"])
        if user.password != before and user.has_usable_password():
            _remember_browser(response, user)
    return response


def _refused(throttle: RateThrottle, reason: str) -> HttpResponse:
    wait = ceiling_seconds(throttle.wait() or 0)
    response = HttpResponse(f"{reason}; try again in {wait} s.", status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(wait)
    return response


def _exempting_device(request: HttpRequest) -> AdminLoginDeviceRateThrottle | None:
    """The budget of this browser's cookie, its place taken, where the browser signed in before as
    the username this POST tries and its cookie has failures left; None where it is as any other."""
    username = _known_browser(request)
    if username is None:
        return None
    device = AdminLoginDeviceRateThrottle(username=username)
    return device if device.allow_request(request, None) else None


def _known_browser(request: HttpRequest) -> str | None:
    """The username of the user this browser signed in as before, where this POST tries it; None
    where it did not."""
    value = request.COOKIES.get(DEVICE_COOKIE)
    if request.method != "POST" or not value:
        return None
    try:
        device = signing.loads(value, salt=DEVICE_SALT, max_age=DEVICE_MAX_AGE_SECONDS)
    except signing.BadSignature:
        return None
    posted = request.POST.get("username", "")
    username = login_username(posted)
    # Another username's cookie, or one of before the cookie named the password: no query.
    if not isinstance(device, dict) or device.get("username") != username:
        return None
    user_model = get_user_model()
    user = user_model._default_manager.filter(pk=device.get("user")).only(user_model.USERNAME_FIELD, "password").first()
    # Deleted, or renamed since; or another user the limit counts as this one (`Op` for `op`),
    # whose password the form checks: the user it signs in as is named as NFKC makes the POST's.
    if user is None or user.get_username() != unicodedata.normalize("NFKC", posted.strip()):
        return None
    digest = str(device.get("password", ""))
    secrets = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    known = any(constant_time_compare(digest, _password_digest(user, secret)) for secret in secrets)
    return user.get_username() if known else None


def _password_digest(user: AbstractBaseUser, secret: str) -> str:
    """A digest of the user's password hash: another once the password is changed. Keyed, as
    Django's session auth hash is, so that the cookie, which its holder can read, tells nothing
    of the hash."""
    return salted_hmac(f"{DEVICE_SALT}.password", user.password, secret=secret, algorithm="sha256").hexdigest()


def _remember_browser(response: HttpResponse, user: AbstractBaseUser) -> None:
    device = {
        "user": user.pk,
        "username": login_username(user.get_username()),
        "password": _password_digest(user, settings.SECRET_KEY),
        "nonce": get_random_string(16),
    }
    response.set_cookie(
        DEVICE_COOKIE,
        signing.dumps(device, salt=DEVICE_SALT),
        max_age=DEVICE_MAX_AGE_SECONDS,
        path=reverse("admin:index"),
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Strict",
    )
