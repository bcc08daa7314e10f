"""Signing secrets sealed at rest (webhooks/sealing.py): the column widened for the Fernet token,
and every secret stored as is until now sealed under SECRET_KEY's key; backwards, opened again.

Widening a varchar is a change of PostgreSQL's catalog alone, no rewrite of the table. The rows
are few (a client's secret and each endpoint's, two during a rotation's overlap). A row is told
by its prefix: a secret as is starts "whsec_", a token never does ("gAAAAA", its version byte),
so that either way the data step leaves the rows it has done, or never had to do, as they are.
The previous release's processes read the column as the secret itself: stop them before it
runs (docs/deployment.md)."""
from django.db import migrations, models

from webhooks import sealing
from webhooks.signing import SECRET_PREFIX


def seal(apps, schema_editor):
    SigningSecret = apps.get_model("webhooks", "SigningSecret")
    for row in SigningSecret.objects.filter(secret__startswith=SECRET_PREFIX).only("pk", "secret"):
        SigningSecret.objects.filter(pk=row.pk).update(secret=sealing.seal(row.secret))


def unseal(apps, schema_editor):
    SigningSecret = apps.get_model("webhooks", "SigningSecret")
    for row in SigningSecret.objects.exclude(secret__startswith=SECRET_PREFIX).only("pk", "secret"):
        SigningSecret.objects.filter(pk=row.pk).update(secret=sealing.unseal(row.secret))


class Migration(migrations.Migration):

    dependencies = [
        ("webhooks", "0014_delivery_receiver_failed"),
    ]

    operations = [
        migrations.AlterField(
            model_name="signingsecret",
            name="secret",
            field=models.CharField(max_length=200),
        ),
        migrations.RunPython(seal, unseal, elidable=False),
    ]
