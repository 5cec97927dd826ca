from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("models", "0001_initial")]

    initial = False

    operations = [
        ops.AlterField(
            model_name="Deployment",
            name="created_at",
            field=fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=True),
        ),
        ops.AddField(
            model_name="Deployment",
            name="idempotency_key",
            field=fields.CharField(null=True, unique=True, description="idempotency key", max_length=255),
        ),
        ops.AddField(
            model_name="Deployment",
            name="request_hash",
            field=fields.CharField(null=True, description="deploy input hash", max_length=64),
        ),
        ops.AddField(
            model_name="Deployment",
            name="server_validated_at",
            field=fields.DatetimeField(
                null=True, description="server validated at", auto_now=False, auto_now_add=False
            ),
        ),
    ]
