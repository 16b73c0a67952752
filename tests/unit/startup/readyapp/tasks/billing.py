from jobqueue import task


@task
def charge(amount):
    return amount
